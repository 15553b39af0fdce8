//! Criterion benchmarks of the dlock engine. (Skeleton: the engine issue fills this in.)
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use dlock_core::Mode;

fn modes(c: &mut Criterion) {
    c.bench_function("mode_compat_all_pairs", |b| {
        b.iter(|| {
            let mut n = 0;
            for a in Mode::ALL {
                for o in Mode::ALL {
                    n += usize::from(std::hint::black_box(a).is_compatible(o));
                }
            }
            n
        })
    });
}

criterion_group!(benches, modes);
criterion_main!(benches);
