//! The export reader refuses a zip on its announced entry count before the zip parser
//! allocates per entry (issue: 184 MB held for a crafted 36 MB zip of 400,000 entries).
//!
//! This file is its own test binary so that it can count allocations with a global
//! allocator: the assertion is on bytes allocated while parsing, not on time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Cursor, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use dp3t_core::error::ExportError;
use dp3t_core::export::{parse_export_zip, MAX_ZIP_ENTRIES};
use dp3t_core::Error;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The system allocator, counting the bytes currently allocated and their peak.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees carry over; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, passed through.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests in this binary measure one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Peak bytes allocated above the starting point while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = NOW.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(start))
}

/// A zip of `n` empty stored entries: `export.bin`, `export.sig`, then filler names.
fn zip_of(n: usize) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(false);
    for i in 0..n {
        let name = match i {
            0 => "export.bin".to_owned(),
            1 => "export.sig".to_owned(),
            _ => format!("{i:x}"),
        };
        w.start_file(name, opts).expect("start");
        w.write_all(b"").expect("write");
    }
    w.finish().expect("finish").into_inner()
}

/// The Entries error of parsing `zip`, after checking that at most 64 KiB were allocated.
fn refused_on_entries(zip: &[u8]) -> String {
    let (r, peak) = peak_during(|| parse_export_zip(zip).map(|_| ()));
    assert!(peak < 64 * 1024, "{peak} bytes allocated while refusing");
    match r {
        Err(Error::Export(ExportError::Entries(found))) => found.join(" "),
        other => panic!("expected an Entries error, got {other:?}"),
    }
}

#[test]
fn a_crafted_directory_of_400000_entries_is_refused_before_allocating() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zip = zip_of(400_000);
    assert!(zip.len() > 30_000_000, "{} bytes", zip.len());
    // The parser alone held 184 MB here; refusing on the count allocates only the message.
    let why = refused_on_entries(&zip);
    assert!(why.contains("ZIP64"), "{why}");
}

#[test]
fn more_entries_than_the_limit_are_refused_before_allocating() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for n in [usize::from(MAX_ZIP_ENTRIES) + 1, 1_000, 65_000] {
        let zip = zip_of(n);
        let why = refused_on_entries(&zip);
        assert!(why.contains(&format!("{n} entries")), "{why}");
    }
}

#[test]
fn up_to_the_limit_the_names_found_are_listed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zip = zip_of(usize::from(MAX_ZIP_ENTRIES));
    let why = refused_on_entries(&zip);
    assert!(
        why.contains("export.bin") && why.contains("export.sig"),
        "{why}"
    );
}
