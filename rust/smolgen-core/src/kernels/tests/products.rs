//! Matrix products on every path against the scalar reference, the packed layout, candle's
//! QMatMul and the thread pool.

use super::*;

#[test]
fn matmul_paths_match_scalar() {
    let mut rng = Rng(6);
    let pools = [
        Pool::single(),
        Pool::new(2).expect("threads"),
        Pool::new(3).expect("threads"),
    ];
    for &k in &[32usize, 64, 576, 1056, 1536] {
        let nb = k / QK;
        for &rows in &[1usize, 3, 7, 33] {
            let extreme = (rows + k) % 2 == 1;
            let w = q4_1_blocks(&mut rng, rows * nb, extreme);
            let wm = QMatrix::new(&w, rows, k).expect("shape");
            let w8 = q8_0_blocks(&mut rng, rows * nb, extreme);
            let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
            for m in 1..=9usize {
                let a = quantized_acts_q8_1(&mut rng, m * nb, !extreme);
                let a8 = quantized_acts_q8_0(&mut rng, m * nb, !extreme);
                let mut want = vec![0f32; m * rows];
                let mut want8 = vec![0f32; m * rows];
                scalar()
                    .matmul(&Pool::single(), &wm, &a, &mut want)
                    .expect("shapes");
                scalar()
                    .matmul(&Pool::single(), &wm8, &a8, &mut want8)
                    .expect("shapes");
                for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
                    let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                    for pool in &pools {
                        let mut got = vec![f32::NAN; m * rows];
                        let mut got8 = vec![f32::NAN; m * rows];
                        kern.matmul(pool, &wm, &a, &mut got).expect("shapes");
                        kern.matmul(pool, &wm8, &a8, &mut got8).expect("shapes");
                        for c in 0..m {
                            let ac = &a[c * nb..(c + 1) * nb];
                            let ac8 = &a8[c * nb..(c + 1) * nb];
                            for r in 0..rows {
                                let (g, e) = (got[c * rows + r], want[c * rows + r]);
                                let t = tol(nb, abs_sum_q4_1(wm.row(r), ac));
                                assert!(
                                    ((g - e) as f64).abs() <= t,
                                    "{} q4_1 rows={rows} k={k} m={m} ({c},{r}): {g} vs {e}",
                                    kern.name()
                                );
                                let vd = kern.vec_dot(wm.row(r), ac).expect("len");
                                assert_eq!(g.to_bits(), vd.to_bits(), "{}", kern.name());
                                let (g8, e8) = (got8[c * rows + r], want8[c * rows + r]);
                                let t8 = tol(nb, abs_sum_q8_0(wm8.row(r), ac8));
                                assert!(
                                    ((g8 - e8) as f64).abs() <= t8,
                                    "{} q8_0 rows={rows} k={k} m={m} ({c},{r}): {g8} vs {e8}",
                                    kern.name()
                                );
                                let vd8 = kern.vec_dot(wm8.row(r), ac8).expect("len");
                                assert_eq!(g8.to_bits(), vd8.to_bits(), "{}", kern.name());
                            }
                        }
                        match &first {
                            None => first = Some((got, got8)),
                            Some((f1, f8)) => {
                                let same = |x: &[f32], y: &[f32]| {
                                    x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
                                };
                                assert!(same(f1, &got), "{} thread counts differ", kern.name());
                                assert!(same(f8, &got8), "{} thread counts differ", kern.name());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packing_keeps_every_block() {
    let mut rng = Rng(11);
    for &(rows, k) in &[(1usize, 32usize), (16, 64), (20, 96), (37, 576)] {
        let nb = k / QK;
        let w = q4_1_blocks(&mut rng, rows * nb, true);
        let wm = QMatrix::new(&w, rows, k).expect("shape");
        let p = PackedQ4_1::pack(&wm);
        assert_eq!((p.rows(), p.cols(), p.row_blocks()), (rows, k, nb));
        assert_eq!(p.size_in_bytes(), rows.div_ceil(16) * 16 * nb * 20);
        for r in 0..rows {
            for b in 0..nb {
                assert_eq!(p.block(r, b).expect("inside"), wm.row(r)[b], "({r}, {b})");
            }
        }
        assert!(p.block(rows, 0).is_err());
        assert!(p.block(0, nb).is_err());
        let w8 = q8_0_blocks(&mut rng, rows * nb, true);
        let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
        let p8 = PackedQ8_0::pack(&wm8);
        assert_eq!((p8.rows(), p8.cols(), p8.row_blocks()), (rows, k, nb));
        assert_eq!(
            p8.size_in_bytes(),
            rows.div_ceil(16) * (nb * 8 + nb.div_ceil(2)) * 64
        );
        for r in 0..rows {
            for b in 0..nb {
                assert_eq!(p8.block(r, b).expect("inside"), wm8.row(r)[b], "({r}, {b})");
            }
        }
        assert!(p8.block(rows, 0).is_err());
    }
}

/// The 16-row kernels equal their scalar statements bit for bit, for every tile shape, group
/// remainder and thread count, and stays within rounding of the row-major scalar reference.
#[test]
fn packed_matmul_matches_its_reference() {
    let mut rng = Rng(12);
    let pools = [
        Pool::single(),
        Pool::new(2).expect("threads"),
        Pool::new(3).expect("threads"),
    ];
    let packers: Vec<Kernels> = available_isas()
        .into_iter()
        .filter_map(Kernels::for_isa)
        .filter(|k| k.packs_weights())
        .collect();
    for isa in [Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni] {
        if isa.is_available() {
            assert!(
                packers.iter().any(|k| k.isa() == isa),
                "{isa:?} multiplies packed matrices"
            );
        }
    }
    for &k in &[32usize, 96, 576, 1536] {
        let nb = k / QK;
        for &rows in &[5usize, 16, 40, 64] {
            let extreme = (rows + k) % 2 == 1;
            let w = q4_1_blocks(&mut rng, rows * nb, extreme);
            let wm = QMatrix::new(&w, rows, k).expect("shape");
            let packed = PackedQ4_1::pack(&wm);
            let w8 = q8_0_blocks(&mut rng, rows * nb, extreme);
            let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
            let packed8 = PackedQ8_0::pack(&wm8);
            for &m in &[1usize, 2, 3, 7, 8, 9, 16, 17, 26] {
                let a = quantized_acts_q8_1(&mut rng, m * nb, !extreme);
                let want = reference_matmul_q4_1(&packed, &a).expect("shapes");
                let a8 = quantized_acts_q8_0(&mut rng, m * nb, !extreme);
                let want8 = reference_matmul_q8_0(&packed8, &a8).expect("shapes");
                for c in 0..m {
                    let ac = &a[c * nb..(c + 1) * nb];
                    for r in 0..rows {
                        let e = dot::vec_dot_q4_1_q8_1(wm.row(r), ac);
                        let g = want[c * rows + r];
                        let t = tol(nb, abs_sum_q4_1(wm.row(r), ac));
                        assert!(
                            ((g - e) as f64).abs() <= t,
                            "reference rows={rows} k={k} m={m} ({c},{r}): {g} vs {e}"
                        );
                        let ac8 = &a8[c * nb..(c + 1) * nb];
                        let e8 = dot::vec_dot_q8_0_q8_0(wm8.row(r), ac8);
                        let g8 = want8[c * rows + r];
                        let t8 = tol(nb, abs_sum_q8_0(wm8.row(r), ac8));
                        assert!(
                            ((g8 - e8) as f64).abs() <= t8,
                            "q8_0 reference rows={rows} k={k} m={m} ({c},{r}): {g8} vs {e8}"
                        );
                    }
                }
                for kern in &packers {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; m * rows];
                        kern.matmul_packed(pool, &packed, &a, &mut got)
                            .expect("shapes");
                        let mut got8 = vec![f32::NAN; m * rows];
                        kern.matmul_packed(pool, &packed8, &a8, &mut got8)
                            .expect("shapes");
                        for (kind, got, want) in [("q4_1", &got, &want), ("q8_0", &got8, &want8)] {
                            for (i, (g, e)) in got.iter().zip(want.iter()).enumerate() {
                                assert_eq!(
                                    g.to_bits(),
                                    e.to_bits(),
                                    "{} {kind} rows={rows} k={k} m={m} threads={} at {i}: {g} vs {e}",
                                    kern.name(),
                                    pool.threads()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_matmul_rejects_bad_shapes() {
    let mut rng = Rng(13);
    let w = q4_1_blocks(&mut rng, 20 * 2, false);
    let packed = PackedQ4_1::pack(&QMatrix::new(&w, 20, 64).expect("shape"));
    let a = quantized_acts_q8_1(&mut rng, 3, false);
    let mut out = vec![0f32; 40];
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let pool = Pool::single();
        if !kern.packs_weights() {
            assert!(kern
                .matmul_packed(&pool, &packed, &a[..2], &mut out[..20])
                .is_err());
            continue;
        }
        assert!(kern.matmul_packed(&pool, &packed, &a, &mut out).is_err());
        assert!(kern.matmul_packed(&pool, &packed, &[], &mut []).is_err());
        assert!(kern
            .matmul_packed(&pool, &packed, &a[..2], &mut out)
            .is_err());
        assert!(kern
            .matmul_packed(&pool, &packed, &a[..2], &mut out[..20])
            .is_ok());
    }
    let w8 = q8_0_blocks(&mut rng, 20 * 2, false);
    let packed8 = PackedQ8_0::pack(&QMatrix::new(&w8, 20, 64).expect("shape"));
    let a8 = quantized_acts_q8_0(&mut rng, 3, false);
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let pool = Pool::single();
        let ok = kern
            .matmul_packed(&pool, &packed8, &a8[..2], &mut out[..20])
            .is_ok();
        assert_eq!(ok, kern.packs_weights(), "{}", kern.name());
        assert!(kern.matmul_packed(&pool, &packed8, &a8, &mut out).is_err());
    }
}

/// One quantized activation feeds several matrices in one pool pass, laid out for the kernels
/// that read it: the same bits as the single products, and a typed error when it was prepared
/// for other readers.
#[test]
fn shared_activation_feeds_row_major_and_packed_matrices() {
    let mut rng = Rng(14);
    let (k, rows, m) = (96usize, 40usize, 3usize);
    let nb = k / QK;
    let w = q4_1_blocks(&mut rng, rows * nb, false);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    let w8 = q8_0_blocks(&mut rng, rows * nb, false);
    let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
    let (packed, packed8) = (PackedQ4_1::pack(&wm), PackedQ8_0::pack(&wm8));
    let x = activations(&mut rng, m * k, false);
    let pool = Pool::new(2).expect("threads");
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut want = vec![0f32; m * rows];
        let mut want8 = vec![0f32; m * rows];
        kern.matmul_f32(&pool, &wm, &x, &mut want).expect("product");
        kern.matmul_f32(&pool, &wm8, &x, &mut want8)
            .expect("product");
        let mut readers = vec![
            (QWeight::Q4_1(wm), want.clone()),
            (QWeight::Q8_0(wm8), want8),
        ];
        if kern.packs_weights() {
            let mut a = vec![BlockQ8_1::default(); m * nb];
            kern.quantize(&x, &mut a).expect("quantize");
            let mut want_packed = vec![0f32; m * rows];
            kern.matmul_packed(&pool, &packed, &a, &mut want_packed)
                .expect("product");
            readers.push((QWeight::Q4_1x16(&packed), want_packed));
            let mut a8 = vec![BlockQ8_0::default(); m * nb];
            kern.quantize(&x, &mut a8).expect("quantize");
            let mut want_packed8 = vec![0f32; m * rows];
            kern.matmul_packed(&pool, &packed8, &a8, &mut want_packed8)
                .expect("product");
            readers.push((QWeight::Q8_0x16(&packed8), want_packed8));
        }
        let mut act = Activation::default();
        for (w, want) in &readers {
            kern.quantize_activation(&x, k, &[*w], &mut act)
                .expect("quantize");
            let mut got = vec![f32::NAN; m * rows];
            kern.matmul_many(&pool, &act, &mut [(*w, &mut got[..])])
                .expect("product");
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(g, e)| g.to_bits() == e.to_bits()),
                "{}",
                kern.name()
            );
        }
        // Prepared for Q4_1 weights only: a Q8_0 matrix cannot use it.
        kern.quantize_activation(&x, k, &[QWeight::Q4_1(wm)], &mut act)
            .expect("quantize");
        let mut out = vec![0f32; m * rows];
        assert!(kern
            .matmul_many(&pool, &act, &mut [(QWeight::Q8_0(wm8), &mut out[..])])
            .is_err());
        if kern.packs_weights() {
            let (row_major, packed) = (QWeight::Q4_1(wm), QWeight::Q4_1x16(&packed));
            let same = kern.layout_for(&row_major) == kern.layout_for(&packed);
            let both = kern.quantize_activation(&x, k, &[row_major, packed], &mut act);
            assert_eq!(both.is_ok(), same, "{}", kern.name());
            if !same {
                kern.quantize_activation(&x, k, &[row_major], &mut act)
                    .expect("quantize");
                assert!(kern
                    .matmul_many(&pool, &act, &mut [(packed, &mut out[..])])
                    .is_err());
            }
        } else {
            let mut out = vec![0f32; m * rows];
            kern.quantize_activation(&x, k, &[QWeight::Q4_1x16(&packed)], &mut act)
                .expect("a layout, whoever multiplies it");
            assert!(kern
                .matmul_many(
                    &pool,
                    &act,
                    &mut [(QWeight::Q4_1x16(&packed), &mut out[..])]
                )
                .is_err());
        }
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let mut rng = Rng(7);
    let w = q4_1_blocks(&mut rng, 4 * 2, false);
    let wm = QMatrix::new(&w, 4, 64).expect("shape");
    let a = quantized_acts_q8_1(&mut rng, 3, false);
    let mut out = vec![0f32; 8];
    let k = Kernels::best();
    assert!(k.matmul(&Pool::single(), &wm, &a, &mut out).is_err());
    assert!(k.matmul(&Pool::single(), &wm, &a[..2], &mut out).is_err());
    assert!(k
        .matmul(&Pool::single(), &wm, &a[..2], &mut out[..4])
        .is_ok());
    assert!(k.matmul(&Pool::single(), &wm, &[], &mut []).is_err());
    assert!(k
        .matmul_f32(&Pool::single(), &wm, &[0.0; 65], &mut out[..4])
        .is_err());
}

#[test]
fn matmul_f32_quantizes_like_ggml() {
    // The f32 entry point equals quantize-then-matmul on every path.
    let mut rng = Rng(8);
    let (rows, k, m) = (37usize, 576usize, 5usize);
    let w = q4_1_blocks(&mut rng, rows * k / QK, false);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    let x = activations(&mut rng, m * k, false);
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut a = vec![BlockQ8_1::default(); m * k / QK];
        kern.quantize(&x, &mut a).expect("lengths");
        let mut y1 = vec![0f32; m * rows];
        let mut y2 = vec![0f32; m * rows];
        kern.matmul(Pool::global(), &wm, &a, &mut y1)
            .expect("shapes");
        kern.matmul_f32(Pool::global(), &wm, &x, &mut y2)
            .expect("shapes");
        assert_eq!(y1, y2);
    }
}

#[test]
fn block_decoding_matches_candle() {
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    use candle_core::Device;

    let mut rng = Rng(9);
    let (rows, k) = (7usize, 96usize);
    let w = q4_1_blocks(&mut rng, rows * k / QK, true);
    let storage = QStorage::from_data(
        Cow::Borrowed(blocks_as_bytes(&w)),
        &Device::Cpu,
        GgmlDType::Q4_1,
    )
    .expect("storage");
    let qt = QTensor::new(storage, (rows, k)).expect("tensor");
    let theirs: Vec<f32> = qt
        .dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("dequantize");
    let mut ours = vec![0f32; rows * k];
    for (blk, out) in w.iter().zip(ours.chunks_mut(QK)) {
        blk.dequantize(out.try_into().expect("32 values"));
    }
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(a.to_bits() == b.to_bits(), "element {i}: {a} vs candle {b}");
    }

    let w8 = q8_0_blocks(&mut rng, rows * k / QK, true);
    let storage = QStorage::from_data(
        Cow::Borrowed(blocks_as_bytes(&w8)),
        &Device::Cpu,
        GgmlDType::Q8_0,
    )
    .expect("storage");
    let qt = QTensor::new(storage, (rows, k)).expect("tensor");
    let theirs: Vec<f32> = qt
        .dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("dequantize");
    let mut ours = vec![0f32; rows * k];
    for (blk, out) in w8.iter().zip(ours.chunks_mut(QK)) {
        blk.dequantize(out.try_into().expect("32 values"));
    }
    assert!(ours
        .iter()
        .zip(&theirs)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn matmul_agrees_with_candle_qmatmul() {
    use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
    use candle_core::{Device, Module, Tensor};

    let mut rng = Rng(10);
    let (rows, k, m) = (64usize, 576usize, 3usize);
    let w = q4_1_blocks(&mut rng, rows * k / QK, false);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    let x = activations(&mut rng, m * k, false);
    let storage = QStorage::from_data(
        Cow::Borrowed(blocks_as_bytes(&w)),
        &Device::Cpu,
        GgmlDType::Q4_1,
    )
    .expect("storage");
    let mm =
        QMatMul::from_qtensor(QTensor::new(storage, (rows, k)).expect("tensor")).expect("qmatmul");
    let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).expect("tensor");
    let theirs: Vec<f32> = mm
        .forward(&xt)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("forward");
    // The f32 truth for scale: dequantized weights times unquantized x.
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut ours = vec![0f32; m * rows];
        kern.matmul_f32(&Pool::single(), &wm, &x, &mut ours)
            .expect("shapes");
        for c in 0..m {
            let xc = &x[c * k..(c + 1) * k];
            for r in 0..rows {
                let mut wf = vec![0f32; k];
                for (blk, out) in wm.row(r).iter().zip(wf.chunks_mut(QK)) {
                    blk.dequantize(out.try_into().expect("32 values"));
                }
                let mag: f64 = wf.iter().zip(xc).map(|(a, b)| (a * b).abs() as f64).sum();
                let (o, t) = (ours[c * rows + r] as f64, theirs[c * rows + r] as f64);
                // Both quantize x to 8 bits (possibly with different tie rounding): agree to
                // well within the quantization noise, 1% of the magnitude.
                assert!(
                    (o - t).abs() <= 1e-2 * mag + 1e-6,
                    "{} ({c},{r}): ours {o} candle {t} (mag {mag})",
                    kern.name()
                );
            }
        }
    }
}

#[test]
fn pool_runs_every_share_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for threads in 1..=4 {
        let pool = Pool::new(threads).expect("threads");
        assert_eq!(pool.threads(), threads);
        let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..2000 {
            let parts = 1 + round % threads;
            pool.run(parts, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        let counts: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
        for (i, &n) in counts.iter().enumerate() {
            // share i runs in every round with parts > i
            let want = (0..2000).filter(|r| 1 + r % threads > i).count();
            assert_eq!(n, want, "threads={threads} share {i}");
        }
        // Idle long enough for the workers to park, then wake them.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let total = AtomicUsize::new(0);
        pool.run(threads, |i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), threads * (threads + 1) / 2);
    }
}

#[test]
fn pool_reports_worker_panics_and_survives() {
    let pool = Pool::new(2).expect("threads");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(2, |i| {
            if i == 1 {
                panic!("share 1 fails");
            }
        })
    }));
    assert!(r.is_err());
    let ran = std::sync::atomic::AtomicUsize::new(0);
    pool.run(2, |_| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), 2);
}
