//! Validates every WGSL file in `shaders/` with naga: parsing, then the validator with all
//! capabilities (f16 included). Kernels that declare `alias T = f32;` are also validated in
//! their f16 variant, and the matmul and matvec kernels in every specialisation the host builds.

use alphanas::device::{specialize_wgsl, DType, ELEMENT_ALIAS_LINE};
use std::path::{Path, PathBuf};

fn shader_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wgsl"))
        .collect();
    files.sort();
    files
}

/// Parses and validates `source`, returning a readable error with the file name.
fn validate(name: &str, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| format!("{name}: parse error:\n{}", e.emit_to_string(source)))?;
    let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    validator
        .validate(&module)
        .map_err(|e| format!("{name}: validation error: {}", e.emit_to_string(source)))?;
    Ok(())
}

#[test]
fn every_shader_validates() {
    let files = shader_files();
    assert!(files.len() >= 7, "expected the kernel shaders in shaders/, found {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let source = std::fs::read_to_string(path).unwrap();
        if let Err(e) = validate(&name, &source) {
            failures.push(e);
        }
        if source.contains(ELEMENT_ALIAS_LINE) {
            let f16 = specialize_wgsl(&source, DType::F16, &[]).unwrap();
            if let Err(e) = validate(&format!("{name} (f16)"), &f16) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shader_has_header() {
    for path in shader_files() {
        let source = std::fs::read_to_string(&path).unwrap();
        let header: Vec<&str> = source.lines().take_while(|l| l.starts_with("//")).collect();
        assert!(header.len() >= 3, "{} needs a header comment (what it computes, bindings, workgroup size, invariants)", path.display());
    }
}

#[test]
fn registered_shaders_match_files() {
    for (name, source) in alphanas::kernels::SHADERS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders").join(format!("{name}.wgsl"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&on_disk, source, "{name} differs from its file");
    }
}

#[test]
fn matmul_specialisations_validate() {
    let source = alphanas::kernels::matmul::gpu::SHADER;
    for dtype in [DType::F32, DType::F16] {
        for transpose_b in [0, 1] {
            for has_bias in [0, 1] {
                let text = specialize_wgsl(source, dtype, &[("TRANSPOSE_B", transpose_b), ("HAS_BIAS", has_bias)]).unwrap();
                let name = format!("matmul {} transpose_b={transpose_b} bias={has_bias}", dtype.name());
                if let Err(e) = validate(&name, &text) {
                    panic!("{e}");
                }
            }
        }
    }
}

#[test]
fn matvec_specialisations_validate() {
    let source = alphanas::kernels::matmul::gpu::MATVEC_SHADER;
    for dtype in [DType::F32, DType::F16] {
        for has_bias in [0, 1] {
            let text = specialize_wgsl(source, dtype, &[("HAS_BIAS", has_bias)]).unwrap();
            let name = format!("matvec {} bias={has_bias}", dtype.name());
            if let Err(e) = validate(&name, &text) {
                panic!("{e}");
            }
        }
    }
}
