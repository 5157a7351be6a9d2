//! The ARMv8 crypto path, the one phones run, checked where it runs.
//!
//! CI cross-compiles the core's tests for `aarch64-unknown-linux-gnu` with the phone
//! targets' `--cfg aes_armv8` and runs them under `qemu-aarch64` (`.ci/run`), so the
//! spec vectors and the stories check the ARM build against the same expected bytes as
//! x86. This file records which AES kernel ran there: the `aes` crate takes its ARMv8
//! kernel (the `AESE`/`AESMC` instructions) exactly when it was built with `aes_armv8`
//! and the CPU reports the AES extension at run time, and falls back to its constant-time
//! software AES otherwise. SHA-256 uses the `sha2` crate's portable code on ARM (its
//! ARMv8 kernel needs the crate's `asm` feature, which this workspace does not enable).
//! On other architectures the file holds no test.
#![cfg(target_arch = "aarch64")]

use aes::cipher::{BlockEncrypt, KeyInit};

#[test]
// The first assertion checks how the test was built (a constant by design).
#[allow(clippy::assertions_on_constants)]
fn the_armv8_aes_kernel_is_the_one_that_runs() {
    assert!(
        cfg!(aes_armv8),
        "built without --cfg aes_armv8: AES would run in software, not as on a phone"
    );
    assert!(
        std::arch::is_aarch64_feature_detected!("aes"),
        "the CPU (or qemu's model of it) has no AES extension: the aes crate falls back to software"
    );
    // FIPS-197 appendix C.1, through the kernel the checks above select.
    let key: [u8; 16] = core::array::from_fn(|i| i as u8);
    let mut block = aes::Block::from(core::array::from_fn::<u8, 16, _>(|i| (i as u8) * 0x11));
    aes::Aes128::new(&key.into()).encrypt_block(&mut block);
    assert_eq!(
        block.as_slice(),
        [
            0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
            0xc5, 0x5a
        ]
    );
}
