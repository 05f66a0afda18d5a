//! The C math functions this binary calls (Rhai's float functions reach them through
//! `f64::sin` and friends), defined here from the pure-Rust `libm` crate rather than taken
//! from the system's libm.
//!
//! Why: the daemon is linked with `-z now`, so the dynamic loader binds every imported
//! symbol at start, and for libm's functions that means running their CPU-dispatch
//! resolvers (IFUNCs), one per function, spread over libm's code. Measured on a daemon with
//! 50 services: 0.5 MB of libm resident for seventeen functions that only migrations call.
//! With the definitions here nothing is imported from libm, `--as-needed` drops it from
//! the binary's dependencies, and it is neither loaded nor resident. `libm` is the Rust
//! project's port of musl's math library (accurate to the same bounds); no hot path here
//! does float math. A symbol this list misses is imported as before (nothing breaks):
//! `readelf -d target/release/hero_proc | grep libm` shows whether libm is still needed.

macro_rules! c_math {
    ($($name:ident($($arg:ident: $t:ty),+) -> $r:ty;)+) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $t),+) -> $r {
            libm::$name($($arg),+)
        }
    )+};
}

c_math! {
    acos(x: f64) -> f64;
    asin(x: f64) -> f64;
    atan(x: f64) -> f64;
    atan2(y: f64, x: f64) -> f64;
    cos(x: f64) -> f64;
    cosh(x: f64) -> f64;
    exp(x: f64) -> f64;
    hypot(x: f64, y: f64) -> f64;
    log(x: f64) -> f64;
    log10(x: f64) -> f64;
    log1p(x: f64) -> f64;
    pow(x: f64, y: f64) -> f64;
    powf(x: f32, y: f32) -> f32;
    sin(x: f64) -> f64;
    sinh(x: f64) -> f64;
    tan(x: f64) -> f64;
    tanh(x: f64) -> f64;
}

#[cfg(test)]
mod tests {
    // The definitions are what `f64`'s methods call in this binary: the answers are
    // libm's, and right.
    #[test]
    fn float_functions_answer_through_the_definitions_here() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(std::hint::black_box(0.5f64).sin(), super::sin(0.5)));
        assert!(close(std::hint::black_box(2.0f64).powf(10.0), 1024.0));
        assert!(close(std::hint::black_box(1.0f64).atan2(1.0), std::f64::consts::FRAC_PI_4));
        assert!(close(std::hint::black_box(100.0f64).log10(), 2.0));
        assert!(close(std::hint::black_box(3.0f64).hypot(4.0), 5.0));
    }
}
