//! How the row-wise kernels of `shaders/norms.wgsl` spread a row over invocations.

/// How a row-wise kernel spreads one row over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowSpread {
    /// A workgroup of 256 invocations per row, reducing through workgroup memory.
    Workgroup,
    /// One invocation per row (64 rows per workgroup), serial loops and no barriers.
    Invocation,
}

impl RowSpread {
    /// The spread for `gpu`: one invocation per row on CPU devices (llvmpipe, WARP), where
    /// a workgroup's barriers cost more than a row's serial loop (the softmaxes of a MiniLM
    /// step, batch 16 x 32, took 24% of its time on lavapipe as workgroups); a workgroup
    /// per row elsewhere.
    pub fn for_device(gpu: &crate::Gpu) -> Self {
        if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu {
            RowSpread::Invocation
        } else {
            RowSpread::Workgroup
        }
    }

    /// The entry point for `entry` (the workgroup form's name) and its workgroup count
    /// over `rows` rows.
    pub(super) fn plan(self, entry: &'static str, rows: usize) -> (&'static str, usize) {
        if self == RowSpread::Workgroup {
            return (entry, rows);
        }
        let rows_entry = match entry {
            "softmax_fwd" => "softmax_fwd_rows",
            "softmax_bwd" => "softmax_bwd_rows",
            "layer_norm_fwd" => "layer_norm_fwd_rows",
            "layer_norm_add_fwd" => "layer_norm_add_fwd_rows",
            "layer_norm_bwd_dx" => "layer_norm_bwd_dx_rows",
            other => return (other, rows),
        };
        (rows_entry, rows.div_ceil(ROWS_PER_GROUP))
    }
}

/// Rows per workgroup of the one-invocation-per-row entry points (`ROWS_WG` in the shader).
const ROWS_PER_GROUP: usize = 64;
