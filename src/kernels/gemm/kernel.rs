//! Which kernel runs a GEMM ([`Kernel`]): its label (the tuning cache's name for it), its
//! check tolerance and its trusted / checked forms.

use super::{coop, template, tiled, tune};

/// Which kernel runs a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `shaders/gemm.wgsl`: the 64x64 workgroup-memory tile (`CAPABOOST_AUTOTUNE=off`), and
    /// the reference every tuned choice is checked against.
    Reference,
    /// A generated register-only variant: the index of its shape in [`template::SHAPES`].
    Register(usize),
    /// The cooperative-matrix GEMM: the index of its configuration in [`coop::CONFIGS`];
    /// only on a device that lists it ([`coop::candidates`]).
    Coop(usize),
    /// [`Kernel::Register`] as a trusted module (no runtime checks) on problems whose
    /// indexing the host proves in range (`trusted`), the checked module elsewhere.
    RegisterTrusted(usize),
    /// A generated workgroup-memory variant: the index of its tile in [`tiled::TILES`].
    Tiled(usize),
    /// [`Kernel::Tiled`] as a trusted module where proven in range, checked elsewhere.
    TiledTrusted(usize),
    /// Split-K ([`super::split`]): the register variant of shape `.0` computes `.1` partial
    /// products over slices of K, then one pass (`shaders/splitk.wgsl`) sums them in a
    /// fixed order and applies alpha, beta and the bias. Unbatched problems only.
    SplitK(usize, u32),
}

/// What a trusted kernel's label ends with.
const TRUSTED: &str = "-trusted";

impl Kernel {
    /// A short name: `tiled64` (the reference), a register shape's label (`r8x8w8x8`) or a
    /// tile's (`t128x128k8`), trusted ones followed by `-trusted`.
    pub fn label(&self) -> String {
        match self {
            Kernel::Reference => "tiled64".into(),
            Kernel::Register(s) => template::SHAPES[*s].label(),
            Kernel::Coop(c) => coop::CONFIGS[*c].label(),
            Kernel::SplitK(s, parts) => format!("{}s{parts}", template::SHAPES[*s].label()),
            Kernel::Tiled(t) => tiled::TILES[*t].label(),
            Kernel::RegisterTrusted(_) | Kernel::TiledTrusted(_) => {
                format!("{}{TRUSTED}", self.checked().label())
            }
        }
    }

    /// Largest relative Frobenius difference from [`Kernel::Reference`] the autotuner's
    /// check accepts: [`tune::CHECK_TOL`] for f32 arithmetic, looser for f16 inputs
    /// ([`coop::F16_CHECK_TOL`]).
    pub fn check_tol(&self) -> f64 {
        match self {
            Kernel::Coop(c) => coop::check_tol(coop::CONFIGS[*c]),
            _ => tune::CHECK_TOL,
        }
    }

    /// The kernel a label names.
    pub fn from_label(label: &str) -> Option<Self> {
        if label == "tiled64" {
            return Some(Kernel::Reference);
        }
        if let Some((inner, parts)) = label.rsplit_once('s')
            && let Some(shape) = template::SHAPES.iter().position(|s| s.label() == inner)
        {
            let parts: u32 = parts.parse().ok().filter(|&p| p >= 1)?;
            return Some(Kernel::SplitK(shape, parts));
        }
        let (base, trusted) = match label.strip_suffix(TRUSTED) {
            Some(base) => (base, true),
            None => (label, false),
        };
        let register = template::SHAPES.iter().position(|s| s.label() == base);
        let tile = tiled::TILES.iter().position(|t| t.label() == base);
        match (register, tile, trusted) {
            (Some(s), _, false) => Some(Kernel::Register(s)),
            (Some(s), _, true) => Some(Kernel::RegisterTrusted(s)),
            (None, Some(t), false) => Some(Kernel::Tiled(t)),
            (None, Some(t), true) => Some(Kernel::TiledTrusted(t)),
            (None, None, false) => coop::CONFIGS
                .iter()
                .position(|c| c.label() == base)
                .map(Kernel::Coop),
            (None, None, true) => None,
        }
    }

    /// Whether this kernel runs as a trusted module where the host proves it in range.
    pub fn trusted(&self) -> bool {
        matches!(self, Kernel::RegisterTrusted(_) | Kernel::TiledTrusted(_))
    }

    /// The same kernel with its runtime checks kept.
    pub fn checked(self) -> Self {
        match self {
            Kernel::RegisterTrusted(s) => Kernel::Register(s),
            Kernel::TiledTrusted(t) => Kernel::Tiled(t),
            k => k,
        }
    }

    /// The trusted form of a generated kernel (the reference has none: itself).
    pub fn trusted_form(self) -> Self {
        match self {
            Kernel::Register(s) => Kernel::RegisterTrusted(s),
            Kernel::Tiled(t) => Kernel::TiledTrusted(t),
            k => k,
        }
    }
}
