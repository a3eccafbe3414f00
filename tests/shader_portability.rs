//! Every WGSL file in `shaders/` parses, validates, and translates to SPIR-V (Vulkan),
//! MSL (Metal), HLSL (DX12) and GLSL ES 3.1 compute (GL): the proof that the kernels run on
//! backends this machine does not have.

use std::collections::BTreeSet;

use capaboost::runtime::shaders::{ALL, ShaderSource};
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn translate_everywhere(shader: &ShaderSource) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(shader.source)
        .map_err(|e| format!("parse: {}", e.emit_to_string(shader.source)))?;
    // Only the capabilities every backend has: no f64, no f16, no subgroups; for the
    // generated f16 GEMM loads, the f16-in-f32 builtins (`unpack2x16float`) that the crate
    // uses only where the adapter has SHADER_F16_IN_F32, and native `f16` (`enable f16`)
    // only on devices with SHADER_F16 (see `kernels::gemm::half_read`), which wgpu's GL
    // backend never offers: those translate to SPIR-V, MSL and HLSL 6.2 but not GLSL.
    let native_f16 = shader.source.starts_with("enable f16;");
    let caps = if shader.source.contains("unpack2x16float") {
        Capabilities::SHADER_FLOAT16_IN_FLOAT32
    } else if native_f16 {
        Capabilities::SHADER_FLOAT16
    } else {
        Capabilities::default()
    };
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("validate: {}", e.emit_to_string(shader.source)))?;
    // Override constants take their WGSL defaults here, as they do at run time when the
    // crate passes none.
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        None,
        &Default::default(),
    )
    .map_err(|e| format!("overrides: {e}"))?;

    let words = spv::write_vec(&module, &info, &spv::Options::default(), None)
        .map_err(|e| format!("SPIR-V: {e}"))?;
    assert!(words.len() > 5);

    let msl_opts = msl::Options {
        lang_version: (2, 0),
        ..Default::default()
    };
    let (msl_src, _) =
        msl::write_string(&module, &info, &msl_opts, &msl::PipelineOptions::default())
            .map_err(|e| format!("MSL: {e}"))?;
    assert!(msl_src.contains("kernel"));

    let mut hlsl_src = String::new();
    let hlsl_opts = hlsl::Options {
        shader_model: if native_f16 {
            hlsl::ShaderModel::V6_2
        } else {
            hlsl::Options::default().shader_model
        },
        ..Default::default()
    };
    let hlsl_pipe = hlsl::PipelineOptions::default();
    hlsl::Writer::new(&mut hlsl_src, &hlsl_opts, &hlsl_pipe)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e}"))?;
    assert!(hlsl_src.contains("numthreads"));
    if native_f16 {
        return Ok(());
    }

    for ep in &module.entry_points {
        let mut glsl_src = String::new();
        let opts = glsl::Options {
            version: glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            ..Default::default()
        };
        let pipe = glsl::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: ep.name.clone(),
            multiview: None,
        };
        glsl::Writer::new(
            &mut glsl_src,
            &module,
            &info,
            &opts,
            &pipe,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write())
        .map_err(|e| format!("GLSL ({}): {e}", ep.name))?;
    }
    Ok(())
}

#[test]
fn every_shader_translates_to_every_backend() {
    let mut failures = Vec::new();
    for shader in ALL {
        if let Err(e) = translate_everywhere(shader) {
            failures.push(format!("{}: {e}", shader.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Stems of the `.wgsl` files in `dir` (relative to the crate root).
fn wgsl_stems(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_generated_gemm_variant_translates_to_every_backend() {
    let register = capaboost::kernels::gemm::template::generated();
    let tiled = capaboost::kernels::gemm::tiled::generated();
    // 5 register shapes x 3 A loads x 9 B loads (3 f32, 3 packed f16, 3 native f16) x
    // (guarded, aligned).
    assert_eq!(register.len(), 270);
    let count = |needle: &str| {
        register
            .iter()
            .filter(|s| s.source.contains(needle))
            .count()
    };
    assert_eq!(count("unpack2x16float"), 90, "the packed f16 loads");
    assert_eq!(count("enable f16;"), 90, "the native f16 loads");
    // 3 workgroup-memory tiles x 3 A loads x 3 f32 B loads x (guarded, aligned).
    assert_eq!(tiled.len(), 54);
    let generated: Vec<_> = register.iter().chain(tiled).copied().collect();
    let names: BTreeSet<&str> = generated.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), generated.len(), "generated names are unique");
    let mut failures = Vec::new();
    for shader in &generated {
        if let Err(e) = translate_everywhere(shader) {
            failures.push(format!("{}: {e}", shader.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_generated_multi_tensor_optimizer_translates_to_every_backend() {
    let shader = capaboost::kernels::optim::multi::source();
    let module = naga::front::wgsl::parse_str(shader.source).unwrap();
    let entries: BTreeSet<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for c in 1..=capaboost::kernels::optim::multi::SQ_SLOTS {
        assert!(entries.contains(format!("sq_partial_{c}").as_str()), "{c}");
    }
    for c in 1..=capaboost::kernels::optim::multi::ADAM_SLOTS {
        assert!(entries.contains(format!("adamw_{c}").as_str()), "{c}");
    }
    translate_everywhere(shader).unwrap();
}

#[test]
fn every_file_in_shaders_is_registered() {
    let registered: BTreeSet<String> = ALL.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(wgsl_stems("shaders"), registered);
    // Each shader is its family file and shared parts, each part verbatim.
    let mut used = BTreeSet::new();
    for s in ALL {
        let parts = s.parts();
        assert_eq!(parts[0].path, format!("shaders/{}.wgsl", s.name));
        for part in parts {
            let path = format!("{}/{}", env!("CARGO_MANIFEST_DIR"), part.path);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), part.text, "{path}");
            used.insert(part.path);
        }
    }
    // Every shared part is composed into some shader.
    for stem in wgsl_stems("shaders/common") {
        let path = format!("shaders/common/{stem}.wgsl");
        assert!(used.contains(&path), "{path} is in no shader");
    }
}

#[test]
fn a_broken_shader_fails_translation() {
    // The check above must be able to fail: a shader using f64 is rejected.
    let bad = ShaderSource {
        name: "uses_f64",
        source: "@group(0) @binding(0) var<storage, read_write> o: array<f64>;\n\
                 @compute @workgroup_size(1) fn main() { o[0] = 1.0lf; }",
    };
    assert!(translate_everywhere(&bad).is_err());
}

/// Parses and validates a cooperative-matrix GEMM source with the capabilities its device
/// needs, and translates it to SPIR-V; to MSL 2.3 where `msl` (the 8x8 configurations:
/// Metal's simdgroup matrices are 8x8 only, and naga would write `simdgroup_half16x16`,
/// a type Metal lacks, for a 16x16 one).
fn translate_coop(shader: &ShaderSource, msl: bool) -> Result<(String, String), String> {
    let module = naga::front::wgsl::parse_str(shader.source)
        .map_err(|e| format!("parse: {}", e.emit_to_string(shader.source)))?;
    let caps =
        Capabilities::COOPERATIVE_MATRIX | Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP;
    let info = Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| format!("validate: {}", e.emit_to_string(shader.source)))?;
    // Each view pair the kernel is compiled for (odd codes are transposed views), and the
    // bias on.
    let mut out = (String::new(), String::new());
    for (a_mode, b_mode) in [(0.0, 0.0), (1.0, 1.0), (2.0, 5.0)] {
        let constants = naga::back::PipelineConstants::from_iter([
            ("A_MODE".to_string(), a_mode),
            ("B_MODE".to_string(), b_mode),
            ("HAS_BIAS".to_string(), 1.0),
        ]);
        let (module, info) =
            naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
                .map_err(|e| format!("overrides: {e}"))?;
        let opts = spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let words =
            spv::write_vec(&module, &info, &opts, None).map_err(|e| format!("SPIR-V: {e}"))?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.0 = String::from_utf8_lossy(&bytes).into_owned();
        if msl {
            let msl_opts = msl::Options {
                lang_version: (2, 3),
                ..Default::default()
            };
            let (src, _) =
                msl::write_string(&module, &info, &msl_opts, &msl::PipelineOptions::default())
                    .map_err(|e| format!("MSL: {e}"))?;
            out.1 = src;
        }
    }
    Ok(out)
}

/// The cooperative-matrix GEMM (`kernels::gemm::coop`): its sources are modules of their own,
/// in neither `ALL` nor the generated register family above (a device without
/// `EXPERIMENTAL_COOPERATIVE_MATRIX` rejects a module that enables it, and lavapipe has no
/// cooperative matrices), so they are not in the every-backend tests. wgpu 30 exposes the
/// feature on Vulkan and Metal only, so they go to SPIR-V (every configuration) and MSL (the
/// 8x8 ones Metal lists), for every accumulator count a subgroup size of 4 to 128 gives.
#[test]
fn every_coop_gemm_source_translates_to_spirv_and_msl() {
    use capaboost::kernels::gemm::coop::{self, CONFIGS};
    let specs = coop::all_specs();
    assert!(specs.len() >= CONFIGS.len() * 3, "{specs:?}");
    let mut failures = Vec::new();
    for spec in &specs {
        let shape = CONFIGS[spec.config];
        let source = spec.source();
        match translate_coop(source, shape.size == 8) {
            Ok((spirv, msl_src)) => {
                assert!(
                    spirv.contains("SPV_KHR_cooperative_matrix"),
                    "{}",
                    source.name
                );
                if shape.size == 8 {
                    assert!(
                        msl_src.contains("simdgroup_multiply_accumulate"),
                        "{}",
                        source.name
                    );
                    assert!(msl_src.contains("simdgroup_store"), "{}", source.name);
                }
            }
            Err(e) => failures.push(format!("{}: {e}", source.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_coop_source_is_rejected_without_the_capability() {
    // What a device without the feature does with the module: naga refuses it, so the
    // sources must never be compiled there (and the translation test above can fail).
    use capaboost::kernels::gemm::coop::{CONFIGS, Spec};
    let f32_config = CONFIGS.iter().position(|c| c.size == 8).unwrap();
    let source = Spec {
        config: f32_config,
        per_subgroup: 4,
        emulated: 0,
    }
    .source();
    let module = naga::front::wgsl::parse_str(source.source).unwrap();
    let without = Validator::new(
        ValidationFlags::all(),
        Capabilities::SUBGROUP | Capabilities::SHADER_FLOAT16,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module);
    assert!(
        without.is_err(),
        "{} validated without COOPERATIVE_MATRIX",
        source.name
    );
    assert!(translate_coop(source, true).is_ok());
}
