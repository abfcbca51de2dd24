//! The vector width the engine's keccak is compiled for, chosen once at run time: the binary
//! targets plain x86-64, and this CPU may have AVX2 or AVX-512 (four or eight keccak states per
//! instruction). FNV mixing stays on the baseline build, which measured faster here.

use std::sync::OnceLock;

/// Vector instruction sets the engine has code paths for, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// 512-bit vectors (AVX-512F).
    Avx512,
    /// 256-bit vectors (AVX2).
    Avx2,
    /// What the binary was built for (SSE2 on x86-64).
    Baseline,
}

/// The level the engine runs at: the widest this CPU supports, or a narrower one named by the
/// `DAGPROXY_SIMD` environment variable (`avx512`, `avx2`, `baseline`), read once.
#[inline]
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let widest = widest();
        match std::env::var("DAGPROXY_SIMD").ok().and_then(|v| parse(&v)) {
            Some(asked) if supported(asked) => asked,
            _ => widest,
        }
    })
}

fn parse(name: &str) -> Option<Level> {
    match name.trim().to_ascii_lowercase().as_str() {
        "avx512" => Some(Level::Avx512),
        "avx2" => Some(Level::Avx2),
        "baseline" | "none" | "off" => Some(Level::Baseline),
        _ => None,
    }
}

/// The widest level this CPU supports.
pub fn widest() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Whether this CPU can run code built for `level`.
pub fn supported(level: Level) -> bool {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
        Level::Baseline => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// A hot loop to be compiled once per level. `run` must be `#[inline(always)]` (with what it
/// calls): that is what puts its body inside the function built with the level's features.
/// A closure would not do: the compiler keeps large closures out of line, built for baseline.
pub trait Kernel {
    /// What the loop returns.
    type Output;
    /// The loop.
    fn run(self) -> Self::Output;
}

/// Runs `k` built for `level`; a level this CPU lacks runs the baseline build.
#[inline(always)]
pub fn at<K: Kernel>(level: Level, k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    match level {
        Level::Avx512 if supported(Level::Avx512) => {
            // SAFETY: the CPU supports AVX-512F, the only feature the callee is built with.
            #[allow(unsafe_code)]
            return unsafe { run_avx512(k) };
        }
        Level::Avx2 if supported(Level::Avx2) => {
            // SAFETY: the CPU supports AVX2, the only feature the callee is built with.
            #[allow(unsafe_code)]
            return unsafe { run_avx2(k) };
        }
        _ => {}
    }
    let _ = level;
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fold<'a>(&'a [u32]);

    impl Kernel for Fold<'_> {
        type Output = u32;

        #[inline(always)]
        fn run(self) -> u32 {
            self.0
                .iter()
                .fold(0, |a, &b| a.wrapping_mul(0x0100_0193) ^ b)
        }
    }

    #[test]
    fn every_level_runs_and_agrees() {
        let data: Vec<u32> = (0..1000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let expected = Fold(&data).run();
        assert_ne!(expected, 0);
        for l in [Level::Avx512, Level::Avx2, Level::Baseline] {
            assert_eq!(at(l, Fold(&data)), expected, "{l:?}");
        }
        assert_eq!(at(level(), Fold(&data)), expected);
        assert!(supported(level()));
        assert!(supported(widest()));
        assert!(supported(Level::Baseline));
    }

    #[test]
    fn override_names_parse() {
        assert_eq!(parse("AVX512"), Some(Level::Avx512));
        assert_eq!(parse(" avx2 "), Some(Level::Avx2));
        assert_eq!(parse("baseline"), Some(Level::Baseline));
        assert_eq!(parse("off"), Some(Level::Baseline));
        assert_eq!(parse("sse9"), None);
    }
}
