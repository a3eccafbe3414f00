//! Elementwise kernels against their f64 CPU references, on odd sizes.

mod common;

use capaboost::{Error, Tensor, kernels::elementwise, kernels::elementwise::cpu};
use common::{max_rel_err, random_vec};

/// f32 results of one rounded op: relative error at most 2^-24; 1e-6 leaves margin.
const TOL: f64 = 1e-6;
const SIZES: [usize; 5] = [1, 3, 1023, 4099, 100_003];

#[test]
fn add_mul_scale_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("add_mul_scale_match_reference");
    for n in SIZES {
        let a = random_vec(&mut rng, n, 10.0);
        let b = random_vec(&mut rng, n, 10.0);
        let alpha = -1.7f32;
        let ta = Tensor::from_slice(&gpu, &a, &[n]).unwrap();
        let tb = Tensor::from_slice(&gpu, &b, &[n]).unwrap();
        let (sum, prod, scaled) = gpu
            .run(|rec| {
                Ok((
                    elementwise::add(rec, &ta, &tb)?,
                    elementwise::mul(rec, &ta, &tb)?,
                    elementwise::scale(rec, &ta, alpha)?,
                ))
            })
            .unwrap();
        let e_add = max_rel_err(&sum.to_vec().unwrap(), &cpu::add(&a, &b), 1e-30);
        let e_mul = max_rel_err(&prod.to_vec().unwrap(), &cpu::mul(&a, &b), 1e-30);
        let e_scale = max_rel_err(&scaled.to_vec().unwrap(), &cpu::scale(&a, alpha), 1e-30);
        eprintln!("n={n}: rel err add {e_add:.2e} mul {e_mul:.2e} scale {e_scale:.2e}");
        assert!(e_add <= TOL && e_mul <= TOL && e_scale <= TOL, "n={n}");
    }
}

#[test]
fn fill_and_copy_are_exact() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("fill_and_copy_are_exact");
    for n in [1, 2, 3, 4, 5, 7, 1023, 100_003] {
        let a = random_vec(&mut rng, n, 100.0);
        let ta = Tensor::from_slice(&gpu, &a, &[n]).unwrap();
        let filled = Tensor::full(&gpu, &[n], 2.5).unwrap();
        let copied = gpu.run(|rec| elementwise::copy(rec, &ta)).unwrap();
        let want_fill: Vec<f32> = cpu::fill(n, 2.5).iter().map(|&x| x as f32).collect();
        let want_copy: Vec<f32> = cpu::copy(&a).iter().map(|&x| x as f32).collect();
        assert_eq!(filled.to_vec().unwrap(), want_fill, "fill n={n}");
        assert_eq!(copied.to_vec().unwrap(), want_copy, "copy n={n}");
    }
}

#[test]
fn zeros_clears_a_reused_buffer() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let shape = [37, 11];
    let ones = Tensor::full(&gpu, &shape, 1.0).unwrap();
    assert!(ones.to_vec().unwrap().iter().all(|&x| x == 1.0));
    drop(ones);
    // The pool hands the same buffer back; zeros must not see the old ones.
    let z = Tensor::zeros(&gpu, &shape).unwrap();
    assert!(gpu.pool_stats().reused_count > 0);
    assert!(z.to_vec().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn shape_mismatches_are_errors() {
    let Some(gpu) = common::gpu() else { return };
    let err = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    assert!(err.to_string().contains("[2, 2]"), "{err}");
    let a = Tensor::from_slice(&gpu, &[1.0; 6], &[2, 3]).unwrap();
    let b = Tensor::from_slice(&gpu, &[1.0; 6], &[3, 2]).unwrap();
    let err = gpu.run(|rec| elementwise::add(rec, &a, &b)).unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    assert!(a.reshape(&[5]).is_err());
    assert_eq!(a.reshape(&[6]).unwrap().shape(), &[6]);
    assert!(a.write(&[0.0; 5]).is_err());
}

#[test]
fn tensors_up_to_the_binding_limit_round_trip() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let limit = gpu.max_binding_bytes();
    let big = 128 * 1024 * 1024 + 4096u64;
    let n = (big / 4) as usize;
    if big <= limit {
        // The adapter allows more than the WebGPU default of 128 MiB: prove it.
        let data: Vec<f32> = (0..n).map(|i| (i % 9973) as f32 - 4000.0).collect();
        let t = Tensor::from_slice(&gpu, &data, &[n]).unwrap();
        let doubled = gpu.run(|rec| elementwise::scale(rec, &t, 2.0)).unwrap();
        let back = doubled.to_vec().unwrap();
        assert!(back.iter().zip(&data).all(|(&g, &d)| g == 2.0 * d));
    } else {
        let err = Tensor::empty(&gpu, &[n]).unwrap_err();
        match &err {
            Error::TooLarge {
                bytes, limit: l, ..
            } => {
                assert_eq!((*bytes, *l), (big, limit));
            }
            other => panic!("expected TooLarge, got {other}"),
        }
        assert!(
            err.to_string().contains("max_storage_buffer_binding_size"),
            "{err}"
        );
        // The largest tensor the device can bind still works end to end.
        let n = (limit / 4) as usize;
        let t = Tensor::full(&gpu, &[n], -3.0).unwrap();
        let copied = gpu.run(|rec| elementwise::copy(rec, &t)).unwrap();
        drop(t);
        let back = copied.to_vec().unwrap();
        assert_eq!(back.len(), n);
        assert!(back.iter().all(|&x| x == -3.0));
    }
}

#[test]
fn add_many_has_the_bits_of_adding_in_turn() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("add_many_has_the_bits_of_adding_in_turn");
    for n in [1, 1023, 4099] {
        let parts: Vec<Tensor> = (0..7)
            .map(|_| Tensor::from_slice(&gpu, &random_vec(&mut rng, n, 10.0), &[n]).unwrap())
            .collect();
        for count in 1..=parts.len() {
            let (many, in_turn) = gpu
                .run(|rec| {
                    let mut acc = parts[0].clone();
                    for p in &parts[1..count] {
                        acc = elementwise::add(rec, &acc, p)?;
                    }
                    Ok((elementwise::add_many(rec, &parts[..count])?, acc))
                })
                .unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.to_vec().unwrap().iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(&many), bits(&in_turn), "{count} tensors of {n}");
        }
    }
    let a = Tensor::from_slice(&gpu, &[1.0; 4], &[4]).unwrap();
    let b = Tensor::from_slice(&gpu, &[1.0; 4], &[2, 2]).unwrap();
    let err = gpu
        .run(|rec| elementwise::add_many(rec, &[a.clone(), a.clone(), b.clone()]))
        .unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    assert!(gpu.run(|rec| elementwise::add_many(rec, &[])).is_err());
}
