//! How the generated GEMMs read their operands: [`ALoad`] and [`BLoad`] (scalar or vec4,
//! f32, packed f16 or native f16), and [`HalfRead`], which of the two f16 reads a device
//! gets.

/// How op(A) `[M, K]` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ALoad {
    /// One element at a time through the view (any view, any shape).
    Scalar,
    /// Plain `[M, K]` with `K % 4 == 0`: vec4 along K.
    VecK,
    /// Transposed (stored `[K, M]`) with `M % 4 == 0`: vec4 along M.
    VecM,
}

/// How op(B) `[K, N]` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BLoad {
    /// One element at a time through the view.
    Scalar,
    /// Plain `[K, N]` with `N % 4 == 0`: vec4 along N.
    VecN,
    /// Transposed (stored `[N, K]`) with `K % 4 == 0`: vec4 along K.
    VecK,
    /// [`BLoad::Scalar`] over packed f16 (`b: array<u32>`, `unpack2x16float`).
    F16Scalar,
    /// [`BLoad::VecN`] over packed f16: two words (4 halves) along N.
    F16N,
    /// [`BLoad::VecK`] over packed f16: two words (4 halves) along K.
    F16K,
    /// [`BLoad::Scalar`] over native f16 (`enable f16;`, `b: array<f16>`).
    NativeScalar,
    /// [`BLoad::VecN`] over native f16 (`b: array<vec4<f16>>`).
    NativeN,
    /// [`BLoad::VecK`] over native f16 (`b: array<vec4<f16>>`).
    NativeK,
}

/// How the generated kernels read an f16 B (the same buffer either way: halves packed two
/// per 32-bit word, element `e` in the low half of word `e / 2` when `e` is even).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HalfRead {
    /// As `f16` values (`enable f16;`): devices with `SHADER_F16`.
    Native,
    /// As `u32` words through `unpack2x16float`: devices with the downlevel flag
    /// `SHADER_F16_IN_F32` but without `SHADER_F16` (the GL backend).
    Unpack,
}

impl BLoad {
    /// The same load over f16 storage read as `read` says (the alignment conditions are
    /// the same: 4 halves start on an even word where 4 floats start on a vec4).
    pub fn half(self, read: HalfRead) -> Self {
        let i = match self {
            BLoad::Scalar | BLoad::F16Scalar | BLoad::NativeScalar => 0,
            BLoad::VecN | BLoad::F16N | BLoad::NativeN => 1,
            BLoad::VecK | BLoad::F16K | BLoad::NativeK => 2,
        };
        match read {
            HalfRead::Unpack => [BLoad::F16Scalar, BLoad::F16N, BLoad::F16K][i],
            HalfRead::Native => [BLoad::NativeScalar, BLoad::NativeN, BLoad::NativeK][i],
        }
    }

    /// Whether B is f16 (packed or native).
    pub fn is_f16(self) -> bool {
        self.is_native() || matches!(self, BLoad::F16Scalar | BLoad::F16N | BLoad::F16K)
    }

    /// Whether B is read as native `f16` (the source enables the `f16` extension).
    pub fn is_native(self) -> bool {
        matches!(self, BLoad::NativeScalar | BLoad::NativeN | BLoad::NativeK)
    }
}
