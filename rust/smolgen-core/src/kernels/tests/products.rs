//! Matrix products on every path against the scalar reference, the packed layout, candle's
//! QMatMul and the thread pool.

use super::*;
use crate::kernels::single::run_product;

fn matmul_paths_match<W: Sample>() {
    let mut rng = Rng(6);
    let pools = [
        Pool::single(),
        Pool::new(2).expect("threads"),
        Pool::new(3).expect("threads"),
    ];
    for nb in [1usize, 2, 18, 33, 48] {
        let k = nb * W::ELEMENTS;
        for &rows in &[1usize, 3, 7, 33] {
            let extreme = (rows + k) % 2 == 1;
            let w = W::random(&mut rng, rows * nb, extreme);
            let wm = QMatrix::new(&w, rows, k).expect("shape");
            let na = k / QK;
            for m in 1..=9usize {
                let a = quantized_acts::<W::Activation>(&mut rng, m * na, !extreme);
                let mut want = vec![0f32; m * rows];
                scalar()
                    .matmul(&Pool::single(), &wm, &a, &mut want)
                    .expect("shapes");
                for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
                    let mut first: Option<Vec<f32>> = None;
                    for pool in &pools {
                        let mut got = vec![f32::NAN; m * rows];
                        kern.matmul(pool, &wm, &a, &mut got).expect("shapes");
                        for c in 0..m {
                            let ac = &a[c * na..(c + 1) * na];
                            for r in 0..rows {
                                let (g, e) = (got[c * rows + r], want[c * rows + r]);
                                let t = tol(na, W::magnitude(wm.row(r), ac));
                                assert!(
                                    ((g - e) as f64).abs() <= t,
                                    "{} {} rows={rows} k={k} m={m} ({c},{r}): {g} vs {e}",
                                    kern.name(),
                                    W::NAME
                                );
                                let vd = kern.vec_dot(wm.row(r), ac).expect("len");
                                assert_eq!(g.to_bits(), vd.to_bits(), "{}", kern.name());
                            }
                        }
                        match &first {
                            None => first = Some(got),
                            Some(f1) => assert!(
                                f1.iter().zip(&got).all(|(p, q)| p.to_bits() == q.to_bits()),
                                "{} {} thread counts differ",
                                kern.name(),
                                W::NAME
                            ),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_paths_match_scalar() {
    for_each_weight_type!(matmul_paths_match);
}

/// A float type's products keep one summation order on every path: the same bits as the
/// scalar reference, whatever the tile shape, batch or thread count.
fn float_products_are_exact<W: Sample>() {
    let mut rng = Rng(17);
    let (rows, nb) = (37usize, 18usize);
    let k = nb * QK;
    let w = W::random(&mut rng, rows * nb, true);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    for m in [1usize, 2, 5, 17] {
        let a = quantized_acts::<W::Activation>(&mut rng, m * nb, true);
        let mut want = vec![0f32; m * rows];
        scalar()
            .matmul(&Pool::single(), &wm, &a, &mut want)
            .expect("shapes");
        for kern in simd_isas() {
            let mut got = vec![f32::NAN; m * rows];
            kern.matmul(&Pool::new(2).expect("threads"), &wm, &a, &mut got)
                .expect("shapes");
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == e.to_bits(),
                    "{} {} m={m} output {i}: {g} vs {e}",
                    kern.name(),
                    W::NAME
                );
            }
        }
    }
}

#[test]
fn float_products_are_the_same_bits_on_every_path() {
    float_products_are_exact::<BlockF16>();
    float_products_are_exact::<BlockBF16>();
    float_products_are_exact::<BlockF32>();
}

fn packing_keeps_blocks<W: Sample + Repack>() {
    let mut rng = Rng(11);
    for &(rows, nb) in &[(1usize, 1usize), (16, 2), (20, 3), (37, 18)] {
        let k = nb * W::ELEMENTS;
        let w = W::random(&mut rng, rows * nb, true);
        let wm = QMatrix::new(&w, rows, k).expect("shape");
        let p = PackedMatrix::pack(&wm);
        assert_eq!((p.rows(), p.cols(), p.row_blocks()), (rows, k, nb));
        assert_eq!(
            p.size_in_bytes(),
            rows.div_ceil(16) * W::group_lines(nb) * 64
        );
        for r in 0..rows {
            let mut want = vec![0f32; k];
            QWeight::from(wm).dequantize_row(r, &mut want).expect("row");
            let mut got = vec![0f32; k];
            p.weight().dequantize_row(r, &mut got).expect("row");
            assert!(want
                .iter()
                .zip(&got)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            for b in 0..nb {
                let got = p.block::<W>(r, b).expect("inside");
                assert_eq!(
                    blocks_as_bytes(&[got]),
                    blocks_as_bytes(&wm.row(r)[b..=b]),
                    "({r}, {b})"
                );
            }
        }
        assert!(p.block::<W>(rows, 0).is_err());
        assert!(p.block::<W>(0, nb).is_err());
        assert!(p.weight().dequantize_row(rows, &mut vec![0f32; k]).is_err());
    }
}

#[test]
fn packing_keeps_every_block() {
    for_each_packed_type!(packing_keeps_blocks);
    // A packed matrix read as another type is an error, not a reinterpretation.
    let mut rng = Rng(17);
    let w = q4_1_blocks(&mut rng, 16, false);
    let p = PackedMatrix::pack(&QMatrix::new(&w, 16, 32).expect("shape"));
    assert!(p.block::<BlockQ8_0>(0, 0).is_err());
    assert!(p.weight().typed::<BlockQ4_1>().is_err());
}

/// The 16-row kernels equal their scalar statements bit for bit, for every tile shape, group
/// remainder and thread count, and stays within rounding of the row-major scalar reference.
fn packed_matmul_matches<W: Sample + Repack>() {
    let mut rng = Rng(12);
    let pools = [
        Pool::single(),
        Pool::new(2).expect("threads"),
        Pool::new(3).expect("threads"),
    ];
    let packers: Vec<Kernels> = available_isas()
        .into_iter()
        .filter_map(Kernels::for_isa)
        .filter(|k| k.packs(W::KIND))
        .collect();
    for isa in [Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni] {
        if isa.is_available() {
            assert!(
                packers.iter().any(|k| k.isa() == isa),
                "{isa:?} multiplies packed {}",
                W::NAME
            );
        }
    }
    for &k in &[32usize, 96, 576, 1536] {
        let k = k.next_multiple_of(W::ELEMENTS);
        let (nb, na) = (k / W::ELEMENTS, k / QK);
        for &rows in &[5usize, 16, 40, 64] {
            let extreme = (rows + k) % 2 == 1;
            let w = W::random(&mut rng, rows * nb, extreme);
            let wm = QMatrix::new(&w, rows, k).expect("shape");
            let packed = PackedMatrix::pack(&wm);
            for &m in &[1usize, 2, 3, 7, 8, 9, 16, 17, 26, 80] {
                let a = quantized_acts::<W::Activation>(&mut rng, m * na, !extreme);
                let want = reference_matmul_packed::<W>(&packed, &a).expect("shapes");
                for c in 0..m {
                    let ac = &a[c * na..(c + 1) * na];
                    for r in 0..rows {
                        let e = W::reference_dot(wm.row(r), ac);
                        let g = want[c * rows + r];
                        let t = tol(na, W::magnitude(wm.row(r), ac));
                        assert!(
                            ((g - e) as f64).abs() <= t,
                            "{} reference rows={rows} k={k} m={m} ({c},{r}): {g} vs {e}",
                            W::NAME
                        );
                    }
                }
                for kern in &packers {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; m * rows];
                        // Weights marked cold prefetch differently, never to other bits.
                        let w = packed.weight().cold(pool.threads() == 2);
                        run_product(kern, pool, &w, &a, &mut got).expect("shapes");
                        for (i, (g, e)) in got.iter().zip(want.iter()).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                e.to_bits(),
                                "{} {} rows={rows} k={k} m={m} threads={} at {i}: {g} vs {e}",
                                kern.name(),
                                W::NAME,
                                pool.threads()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_matmul_matches_its_reference() {
    for_each_packed_type!(packed_matmul_matches);
}

fn packed_matmul_rejects<W: Sample + Repack>() {
    let mut rng = Rng(13);
    let w = W::random(&mut rng, 20 * 2, false);
    let packed = PackedMatrix::pack(&QMatrix::new(&w, 20, 2 * W::ELEMENTS).expect("shape"));
    // One row of activation blocks, and a half row more.
    let na = 2 * W::ELEMENTS / QK;
    let a = quantized_acts::<W::Activation>(&mut rng, na + na / 2, false);
    let mut out = vec![0f32; 40];
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let pool = Pool::single();
        let ok = kern
            .matmul_packed::<W>(&pool, &packed, &a[..na], &mut out[..20])
            .is_ok();
        assert_eq!(ok, kern.packs(W::KIND), "{} {}", kern.name(), W::NAME);
        assert!(kern
            .matmul_packed::<W>(&pool, &packed, &a, &mut out)
            .is_err());
        assert!(kern
            .matmul_packed::<W>(&pool, &packed, &[], &mut [])
            .is_err());
        assert!(kern
            .matmul_packed::<W>(&pool, &packed, &a[..na], &mut out)
            .is_err());
    }
}

#[test]
fn packed_matmul_rejects_bad_shapes() {
    for_each_packed_type!(packed_matmul_rejects);
    // Activations of another type are refused.
    let mut rng = Rng(18);
    let w = q4_1_blocks(&mut rng, 20 * 2, false);
    let packed = PackedMatrix::pack(&QMatrix::new(&w, 20, 64).expect("shape"));
    let a8 = quantized_acts::<BlockQ8_0>(&mut rng, 2, false);
    let mut out = vec![0f32; 20];
    assert!(Kernels::best()
        .matmul_packed::<BlockQ8_0>(&Pool::single(), &packed, &a8, &mut out)
        .is_err());
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
    let (packed, packed8) = (PackedMatrix::pack(&wm), PackedMatrix::pack(&wm8));
    let x = activations(&mut rng, m * k, false);
    let pool = Pool::new(2).expect("threads");
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut want = vec![0f32; m * rows];
        let mut want8 = vec![0f32; m * rows];
        kern.matmul_f32(&pool, &wm, &x, &mut want).expect("product");
        kern.matmul_f32(&pool, &wm8, &x, &mut want8)
            .expect("product");
        let mut readers = vec![(QWeight::from(wm), want), (QWeight::from(wm8), want8)];
        if kern.packs(BlockQ4_1::KIND) {
            let mut a = vec![BlockQ8_1::default(); m * nb];
            kern.quantize(&x, &mut a).expect("quantize");
            let mut want_packed = vec![0f32; m * rows];
            kern.matmul_packed::<BlockQ4_1>(&pool, &packed, &a, &mut want_packed)
                .expect("product");
            readers.push((packed.weight(), want_packed));
        }
        if kern.packs(<BlockQ8_0 as WeightBlock>::KIND) {
            let mut a8 = vec![BlockQ8_0::default(); m * nb];
            kern.quantize(&x, &mut a8).expect("quantize");
            let mut want_packed8 = vec![0f32; m * rows];
            kern.matmul_packed::<BlockQ8_0>(&pool, &packed8, &a8, &mut want_packed8)
                .expect("product");
            readers.push((packed8.weight(), want_packed8));
        }
        let mut act = Activation::default();
        let check = |act: &Activation, w: QWeight<'_>, want: &[f32]| {
            let mut got = vec![f32::NAN; m * rows];
            kern.matmul_many(&pool, act, &mut [(w, &mut got[..])])
                .expect("product");
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(g, e)| g.to_bits() == e.to_bits()),
                "{} {w:?}",
                kern.name()
            );
        };
        for (w, want) in &readers {
            kern.quantize_activation(&x, k, &[*w], &mut act)
                .expect("quantize");
            check(&act, *w, want);
        }
        // Every reader from one quantization, whatever layouts they want.
        let all: Vec<QWeight<'_>> = readers.iter().map(|(w, _)| *w).collect();
        kern.quantize_activation(&x, k, &all, &mut act)
            .expect("quantize");
        for (w, want) in &readers {
            check(&act, *w, want);
        }
        // Prepared for Q4_1 weights only: a Q8_0 matrix cannot use it.
        kern.quantize_activation(&x, k, &[QWeight::from(wm)], &mut act)
            .expect("quantize");
        let mut out = vec![0f32; m * rows];
        assert!(kern
            .matmul_many(&pool, &act, &mut [(QWeight::from(wm8), &mut out[..])])
            .is_err());
        if kern.packs(BlockQ4_1::KIND) {
            let (row_major, packed) = (QWeight::from(wm), packed.weight());
            let same = kern.gemm_for(&row_major).expect("gemm").1
                == kern.gemm_for(&packed).expect("gemm").1;
            if !same {
                assert!(kern
                    .matmul_many(&pool, &act, &mut [(packed, &mut out[..])])
                    .is_err());
            }
        } else {
            // A path with no 16-row kernel refuses a packed matrix, in either call.
            assert!(kern
                .quantize_activation(&x, k, &[packed.weight()], &mut act)
                .is_err());
            assert!(kern
                .matmul_many(&pool, &act, &mut [(packed.weight(), &mut out[..])])
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

/// Our decoding of a type's blocks (extreme scales included) equals candle's, bit for bit.
fn decoding_matches_candle<W: Sample>() {
    use candle_core::quantized::{QStorage, QTensor};
    use candle_core::Device;

    let mut rng = Rng(9);
    let (rows, k) = (7usize, 3 * W::ELEMENTS);
    let w = W::random(&mut rng, rows * 3, true);
    let dtype = crate::load::gguf::ggml_dtype(W::GGML_TYPE).expect("a ggml type");
    let storage = QStorage::from_data(Cow::Borrowed(blocks_as_bytes(&w)), &Device::Cpu, dtype)
        .expect("storage");
    let theirs: Vec<f32> = QTensor::new(storage, (rows, k))
        .and_then(|qt| qt.dequantize(&Device::Cpu))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("dequantize");
    let mut ours = vec![0f32; rows * k];
    for (blk, out) in w.iter().zip(ours.chunks_mut(W::ELEMENTS)) {
        blk.dequantize(out);
    }
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{} element {i}: {a} vs candle {b}",
            W::NAME
        );
    }
}

#[test]
fn block_decoding_matches_candle() {
    for_each_weight_type!(decoding_matches_candle);
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
                    blk.dequantize(out);
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
