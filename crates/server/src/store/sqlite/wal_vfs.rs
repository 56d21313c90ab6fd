//! A thin layer over SQLite's own file layer for the writer's connection: its writes to the
//! WAL are gathered in memory and reach the file in one `pwrite` when SQLite syncs it.
//!
//! SQLite writes each WAL frame as two `pwrite`s (a 24-byte header, then the page), one after
//! the other in the file: a dm send writes about seven pages, so a commit of a few sends was
//! some fifty system calls before its `fdatasync`, a fifth of the writer's CPU at 5,000 sends/s
//! (docs/benchmarks.md, issue 12). Nothing changes in what reaches the disk or when it is
//! durable: the bytes are written before the sync that makes them durable, and a commit's
//! frames become visible to other connections only after that sync. Any read, size or
//! truncation of the file, and any write that does not continue the gathered bytes, writes
//! them out first. Every other file (the database, the shared-memory index) is SQLite's own.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open with to use this layer.
pub(super) const NAME: &str = "switchboard-wal";
const NAME_C: &std::ffi::CStr = c"switchboard-wal";

/// Most bytes gathered before they are written anyway. SQLite's own layer takes writes under
/// 128 KiB only (it masks the length to 17 bits: a write of exactly 128 KiB fails as "disk
/// full", which the rollback test here caught).
const MAX_PENDING: usize = 120 * 1024;

/// Registers the layer with SQLite once; returns whether it is available.
pub(super) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find returns SQLite's default file layer or null; the struct we
        // register is leaked, so it outlives every connection that uses it.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return false;
            }
            let mut vfs: ffi::sqlite3_vfs = *base;
            vfs.szOsFile = c_int::try_from(HEADER).unwrap_or(c_int::MAX).saturating_add((*base).szOsFile);
            vfs.zName = NAME_C.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            let _ = BASE.set(Base(base));
            ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0) == ffi::SQLITE_OK
        }
    })
}

/// SQLite's default file layer, which does the real work.
struct Base(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's file layers are process-wide and safe to use from any thread.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}
static BASE: OnceLock<Base> = OnceLock::new();

/// Our part of an open WAL file; SQLite's own file object follows it in the same allocation.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    pending: *mut Pending,
}

/// Bytes written but not yet passed on: `bytes` belong at `start` in the file.
struct Pending {
    start: i64,
    bytes: Vec<u8>,
}

/// Where SQLite's own file object starts (aligned for it).
const HEADER: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Base(base)) = BASE.get() else { return ffi::SQLITE_ERROR };
    let Some(base_open) = (unsafe { (**base).xOpen }) else { return ffi::SQLITE_ERROR };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // SAFETY: `file` has room for SQLite's own object (szOsFile is larger than its).
        return unsafe { base_open(*base, name, file, flags, out_flags) };
    }
    // SAFETY: the allocation is HEADER + the base's szOsFile bytes, as registered.
    unsafe {
        let ours = file.cast::<WalFile>();
        let inner = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
        let rc = base_open(*base, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // A null method table tells SQLite there is nothing to close.
            (*ours).base.pMethods = std::ptr::null();
            return rc;
        }
        (*ours).inner = inner;
        (*ours).pending = Box::into_raw(Box::new(Pending { start: 0, bytes: Vec::new() }));
        (*ours).base.pMethods = &METHODS;
    }
    ffi::SQLITE_OK
}

/// The file and its pending bytes.
///
/// SAFETY (for every caller): SQLite passes back the object `open` set up, from one thread at a
/// time (the writer's connection is its thread's alone).
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'a mut Pending) {
    unsafe {
        let ours = file.cast::<WalFile>();
        ((*ours).inner, &mut *(*ours).pending)
    }
}

/// Calls SQLite's own method of the inner file.
macro_rules! inner {
    ($inner:expr, $method:ident $(, $arg:expr)*) => {
        match unsafe { (*(*$inner).pMethods).$method } {
            Some(f) => unsafe { f($inner $(, $arg)*) },
            None => ffi::SQLITE_IOERR,
        }
    };
}

/// Writes out what is pending, then calls SQLite's own method: for every operation that must
/// see the file as SQLite believes it is.
macro_rules! flushed {
    ($file:expr, $method:ident $(, $arg:expr)*) => {{
        let (inner, p) = unsafe { parts($file) };
        match unsafe { flush(inner, p) } {
            ffi::SQLITE_OK => inner!(inner, $method $(, $arg)*),
            rc => rc,
        }
    }};
}

/// Writes out what is pending.
unsafe fn flush(inner: *mut ffi::sqlite3_file, p: &mut Pending) -> c_int {
    if p.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Ok(n) = c_int::try_from(p.bytes.len()) else { return ffi::SQLITE_IOERR_WRITE };
    let rc = inner!(inner, xWrite, p.bytes.as_ptr().cast::<c_void>(), n, p.start);
    p.bytes.clear();
    rc
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    let (inner, p) = unsafe { parts(file) };
    let Ok(len) = usize::try_from(amt) else { return ffi::SQLITE_IOERR_WRITE };
    let follows = !p.bytes.is_empty() && i64::try_from(p.bytes.len()).is_ok_and(|n| p.start + n == offset);
    if !follows || p.bytes.len() + len > MAX_PENDING {
        let rc = unsafe { flush(inner, p) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if len > MAX_PENDING {
            return inner!(inner, xWrite, data, amt, offset);
        }
        p.start = offset;
    }
    // SAFETY: SQLite hands `amt` readable bytes at `data`.
    p.bytes.extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, data: *mut c_void, amt: c_int, offset: i64) -> c_int {
    flushed!(file, xRead, data, amt, offset)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed!(file, xSync, flags)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed!(file, xTruncate, size)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed!(file, xFileSize, size)
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let (inner, p) = unsafe { parts(file) };
    let flushed = unsafe { flush(inner, p) };
    let closed = inner!(inner, xClose);
    // SAFETY: made by Box::into_raw in `open`, freed once here.
    unsafe {
        let ours = file.cast::<WalFile>();
        drop(Box::from_raw((*ours).pending));
        (*ours).pending = std::ptr::null_mut();
    }
    if flushed != ffi::SQLITE_OK { flushed } else { closed }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (inner, _) = unsafe { parts(file) };
    inner!(inner, xLock, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (inner, _) = unsafe { parts(file) };
    inner!(inner, xUnlock, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (inner, _) = unsafe { parts(file) };
    inner!(inner, xCheckReservedLock, out)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // Whatever the control does with the file, it sees every byte written so far.
    flushed!(file, xFileControl, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (inner, _) = unsafe { parts(file) };
    match unsafe { (*(*inner).pMethods).xSectorSize } {
        Some(f) => unsafe { f(inner) },
        None => 4096,
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (inner, _) = unsafe { parts(file) };
    match unsafe { (*(*inner).pMethods).xDeviceCharacteristics } {
        Some(f) => unsafe { f(inner) },
        None => 0,
    }
}

/// The WAL file's methods: writes gathered, everything else SQLite's own. Version 1: SQLite
/// maps no shared memory and no pages through the WAL file itself.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    fn writer(path: &std::path::Path, cache_pages: u32) -> Connection {
        assert!(register());
        let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).unwrap();
        c.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;
             PRAGMA cache_size={cache_pages}; CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT);"
        ))
        .unwrap();
        c
    }

    /// What a crash at this instant would leave: the database and WAL files as they are now.
    fn copy_as_after_a_crash(dir: &std::path::Path) -> Connection {
        let to = dir.join("copy");
        std::fs::create_dir_all(&to).unwrap();
        for f in ["t.db", "t.db-wal"] {
            std::fs::copy(dir.join(f), to.join(f)).unwrap();
        }
        Connection::open(to.join("t.db")).unwrap()
    }

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn every_commit_is_in_the_files_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir.path().join("t.db"), 2000);
        for i in 0..300 {
            w.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![i, "x".repeat(300)]).unwrap();
        }
        // Another connection, on SQLite's own file layer, reads what was committed.
        let reader = Connection::open(dir.path().join("t.db")).unwrap();
        assert_eq!(count(&reader), 300);
        let copy = copy_as_after_a_crash(dir.path());
        assert_eq!(count(&copy), 300, "a commit's frames were written before its sync returned");
        let ok: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn spilled_and_rolled_back_frames_and_wal_restarts_leave_a_sound_file() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny page cache makes big transactions write frames before their commit and read
        // them back.
        let w = writer(&dir.path().join("t.db"), 10);
        let big = |c: &Connection, from: i64| {
            c.execute_batch("BEGIN").unwrap();
            for k in from..from + 500 {
                c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, "y".repeat(500)])
                    .unwrap();
            }
        };
        big(&w, 0);
        w.execute_batch("COMMIT").unwrap();
        big(&w, 1000);
        w.execute_batch("ROLLBACK").unwrap();
        let reader = Connection::open(dir.path().join("t.db")).unwrap();
        reader.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        // The WAL restarts under the next write, from its start.
        big(&w, 2000);
        w.execute_batch("COMMIT").unwrap();
        w.execute("UPDATE t SET v = 'z' WHERE k = 0", []).unwrap();
        assert_eq!(count(&reader), 1000);
        let copy = copy_as_after_a_crash(dir.path());
        assert_eq!(count(&copy), 1000);
        let v: String = copy.query_row("SELECT v FROM t WHERE k = 0", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "z");
        let ok: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }
}
