//! Declares the `fuzzing` cfg that cargo-fuzz sets, so `#[cfg(fuzzing)]` is not an
//! unexpected cfg under the workspace lints.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
