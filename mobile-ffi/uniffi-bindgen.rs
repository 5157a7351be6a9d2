//! The `uniffi-bindgen` command, built from the same uniffi version as the library so that
//! generated bindings always match the scaffolding compiled into `libdp3t_mobile_ffi`.
//!
//! Used by `mobile-ffi/generate-bindings.sh` in library mode:
//! `uniffi-bindgen generate --library target/debug/libdp3t_mobile_ffi.so --language kotlin --out-dir ...`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
