//! `capaboost info`: the adapters wgpu finds, the one capaboost would use, and its limits
//! and features.

use crate::runtime::gpu::{AdapterSelection, choose_adapter, enumerate_adapters};

/// Lists the adapters and prints the chosen one's limits and features.
pub fn run() -> crate::Result<()> {
    let sel = AdapterSelection::from_env()?;
    let adapters = enumerate_adapters();
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    let chosen = choose_adapter(&infos, &sel);
    println!("capaboost {}", crate::VERSION);
    println!("adapters found: {}", infos.len());
    for (i, a) in infos.iter().enumerate() {
        let mark = if Some(i) == chosen { "*" } else { " " };
        println!(
            "{mark} [{i}] {} | backend {} | {:?} | driver {} {}",
            a.name,
            a.backend.to_str(),
            a.device_type,
            a.driver,
            a.driver_info
        );
    }
    let Some(idx) = chosen else {
        println!("no adapter matches the selection; `*` marks none");
        return Err(crate::Error::NoAdapter {
            tried: format!("{sel:?}"),
        });
    };
    let a = &adapters[idx];
    println!();
    println!(
        "selected: [{idx}] {} ({})",
        infos[idx].name,
        infos[idx].backend.to_str()
    );
    print_limits(&a.limits());
    print_features(a.features());
    print_coop(a);
    let i = &infos[idx];
    if i.subgroup_max_size > 0 {
        println!(
            "subgroup size: {}..{}",
            i.subgroup_min_size, i.subgroup_max_size
        );
    }
    print_capabilities(&crate::Gpu::with_selection(&sel)?);
    Ok(())
}

/// What the crate uses on the device and the fallbacks it takes there.
fn print_capabilities(gpu: &crate::Gpu) {
    let c = gpu.capabilities();
    println!("capaboost on this device:");
    let timing = match c.timing {
        crate::TimingSource::Timestamps => "GPU timestamps",
        crate::TimingSource::WallClock => "wall clock around a wait (no TIMESTAMP_QUERY)",
    };
    println!("  timing                            {timing}");
    let calls = if c.serialised_calls {
        "serialised per device (GL context lock)"
    } else {
        "concurrent"
    };
    println!("  device calls                      {calls}");
    println!(
        "  largest tensor                    {} MiB (one storage binding)",
        c.max_tensor_bytes / (1024 * 1024)
    );
    let half = match crate::kernels::gemm::half_read(gpu) {
        Some(crate::kernels::gemm::HalfRead::Native) => "native f16 loads (SHADER_F16)",
        Some(crate::kernels::gemm::HalfRead::Unpack) => "unpack2x16float (SHADER_F16_IN_F32)",
        None => "integer decode, reference GEMM only",
    };
    println!("  f16 base weights (--base-dtype)   {half}");
    println!("  subgroups                         not used");
    let coop: Vec<String> = crate::kernels::gemm::coop::candidates(gpu)
        .iter()
        .map(|k| k.label())
        .collect();
    println!(
        "  cooperative-matrix GEMM           {} (CAPABOOST_COOP={})",
        if coop.is_empty() {
            "not used".to_string()
        } else {
            coop.join(", ")
        },
        match crate::runtime::coopmat::policy() {
            crate::runtime::coopmat::CoopPolicy::Off => "off",
            crate::runtime::coopmat::CoopPolicy::F32 => "f32",
            crate::runtime::coopmat::CoopPolicy::F16 => "f16",
        }
    );
}

/// Whether the adapter has cooperative matrices, and the configurations it lists.
fn print_coop(a: &wgpu::Adapter) {
    let has = a
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
    println!(
        "  EXPERIMENTAL_COOPERATIVE_MATRIX {}",
        if has { "yes" } else { "no" }
    );
    if has {
        for p in a.cooperative_matrix_properties() {
            println!(
                "    {}x{}x{} {:?} x {:?} -> {:?}{}",
                p.m_size,
                p.n_size,
                p.k_size,
                p.ab_type,
                p.ab_type,
                p.cr_type,
                if p.saturating_accumulation {
                    " (saturating)"
                } else {
                    ""
                }
            );
        }
    }
}

fn print_limits(l: &wgpu::Limits) {
    println!("limits:");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  max_storage_buffer_binding_size   {} ({:.0} MiB)",
        l.max_storage_buffer_binding_size,
        mib(l.max_storage_buffer_binding_size)
    );
    println!(
        "  max_buffer_size                   {} ({:.0} MiB)",
        l.max_buffer_size,
        mib(l.max_buffer_size)
    );
    println!(
        "  max_storage_buffers_per_stage     {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage     {} bytes",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_wg    {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_size        {} x {} x {}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_workgroups_per_dim    {}",
        l.max_compute_workgroups_per_dimension
    );
}

fn print_features(f: wgpu::Features) {
    println!("features:");
    for (name, feat) in [
        ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
        (
            "TIMESTAMP_QUERY_INSIDE_PASSES",
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        ),
        ("SHADER_F16", wgpu::Features::SHADER_F16),
        ("SUBGROUP", wgpu::Features::SUBGROUP),
        ("SHADER_F64", wgpu::Features::SHADER_F64),
        ("SHADER_INT64", wgpu::Features::SHADER_INT64),
    ] {
        println!(
            "  {name:<30}{}",
            if f.contains(feat) { "yes" } else { "no" }
        );
    }
}
