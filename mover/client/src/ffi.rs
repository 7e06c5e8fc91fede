//! The client's C ABI, declared in `shim-c/include/shmover_client.h`.
//!
//! Conventions: functions return 0 on success and an error code otherwise
//! (the numbers of [`crate::code`] and the protocol's `ErrorCode`);
//! `shmover_last_error(c)` gives the sentence. No panic crosses this
//! boundary: each body runs under `catch_unwind`, and a panic becomes
//! `SHMOVER_ERR_INTERNAL`. The library owns every object it returns and
//! frees it in the matching `_free`/`_disconnect` call.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

use crate::{code, Client, ClientKind, Error, ObjectInfo, Options};

/// Success.
pub const SHMOVER_OK: c_int = 0;
/// Not an error: the restore has no more blocks.
pub const SHMOVER_END: c_int = 1000;
/// A panic inside the library.
pub const SHMOVER_ERR_INTERNAL: c_int = 14;

thread_local! {
    static THREAD_ERROR: RefCell<(c_int, CString)> = RefCell::new((0, CString::default()));
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// The handle behind `shmover_client_t *`.
pub struct ShmoverClient {
    client: Option<Client>,
    last_code: c_int,
    last_error: CString,
}

#[cfg(test)]
impl ShmoverClient {
    /// A handle around a client connected by a test.
    pub(crate) fn wrapping(client: Client) -> Self {
        Self {
            client: Some(client),
            last_code: 0,
            last_error: CString::default(),
        }
    }
}

impl std::fmt::Debug for ShmoverClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmoverClient")
            .field("last_code", &self.last_code)
            .finish()
    }
}

/// An object's description, behind `shmover_info_t *`.
#[derive(Debug)]
pub struct ShmoverInfo {
    info: ObjectInfo,
    name: CString,
    /// Key and value pairs in key order.
    meta: Vec<(CString, CString)>,
}

impl ShmoverInfo {
    fn new(info: ObjectInfo) -> Self {
        Self {
            name: cstring(&info.name),
            meta: info
                .metadata
                .iter()
                .map(|(k, v)| (cstring(k), cstring(v)))
                .collect(),
            info,
        }
    }
}

/// A list of objects, behind `shmover_list_t *`.
#[derive(Debug)]
pub struct ShmoverList {
    items: Vec<ShmoverInfo>,
}

/// The code a C caller sees for `e`: never success, never the end of a
/// restore.
fn c_code(e: &Error) -> c_int {
    match e.code as c_int {
        SHMOVER_OK | SHMOVER_END => code::PROTOCOL as c_int,
        c => c,
    }
}

fn set_thread_error(code: c_int, msg: &str) -> c_int {
    // try_with: during thread teardown the slot may be gone; never panic.
    let _ = THREAD_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            *slot = (code, cstring(msg));
        }
    });
    code
}

/// Runs `f` on the client, recording any error in the handle.
pub(crate) fn with_client(
    c: *mut ShmoverClient,
    f: impl FnOnce(&mut Client) -> Result<(), Error>,
) -> c_int {
    let run = AssertUnwindSafe(|| {
        // SAFETY: the caller passes a handle from `shmover_connect` that one
        // thread at a time uses, or null.
        let Some(h) = (unsafe { c.as_mut() }) else {
            return set_thread_error(code::INVALID_ARGUMENT as c_int, "null client handle");
        };
        let Some(client) = h.client.as_mut() else {
            return set_thread_error(code::INVALID_ARGUMENT as c_int, "client not connected");
        };
        match f(client) {
            Ok(()) => {
                h.last_code = 0;
                SHMOVER_OK
            }
            Err(e) => {
                h.last_code = c_code(&e);
                h.last_error = cstring(&e.message);
                set_thread_error(h.last_code, &e.message)
            }
        }
    });
    match catch_unwind(run) {
        Ok(rc) => rc,
        Err(_) => {
            // SAFETY: as above; the panic left the handle in some state, but
            // it is still a valid allocation.
            if let Some(h) = unsafe { c.as_mut() } {
                // The panic may have stopped the call halfway (a block half
                // written, a reply half read): hang the connection up, so
                // that the mover drops the stream and `shmover_broken` tells
                // the caller to connect again.
                caught((), || {
                    if let Some(client) = h.client.as_mut() {
                        client.abandon_after_panic();
                    }
                });
                h.last_code = SHMOVER_ERR_INTERNAL;
                h.last_error = cstring("internal error in the shmover client library");
            }
            set_thread_error(
                SHMOVER_ERR_INTERNAL,
                "internal error in the shmover client library",
            )
        }
    }
}

fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_thread_error(
            SHMOVER_ERR_INTERNAL,
            "internal error in the shmover client library",
        )
    })
}

/// Runs a trivial exported function, turning a panic (there should be
/// none) into `default` so that none ever unwinds into C.
fn caught<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// Reads a C string argument.
///
/// # Safety
///
/// `p` must be null or a valid NUL-terminated string.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::new(
            code::INVALID_ARGUMENT,
            format!("{what} is null"),
        ));
    }
    // SAFETY: non-null, and the caller promised NUL termination.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::new(code::INVALID_ARGUMENT, format!("{what} is not UTF-8")))
}

/// Connects to the mover.
///
/// # Arguments
///
/// - `socket_path`: the mover's socket, or NULL for `$MOVER_SOCKET` and
///   then the default path.
/// - `kind`: 1 generic, 2 SBT, 3 BACKINT (selects the name space).
/// - `label`: shown in logs and `mover status`; may be NULL.
/// - `timeout_ms`: bound on every wait for the mover; 0 or negative for
///   the default (60 s, or `$MOVER_TIMEOUT` seconds).
/// - `out`: receives the handle. On failure it still receives a handle
///   (unless NULL) whose last error says why; free it with
///   `shmover_disconnect`.
///
/// # Safety
///
/// Strings must be NULL or NUL-terminated; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmover_connect(
    socket_path: *const c_char,
    kind: c_int,
    label: *const c_char,
    timeout_ms: c_int,
    out: *mut *mut ShmoverClient,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_thread_error(code::INVALID_ARGUMENT as c_int, "output pointer is null");
        }
        // SAFETY: non-null, and the caller's to write. Whatever follows
        // (a panic included), the caller never reads an old value.
        unsafe { *out = std::ptr::null_mut() };
        let mut opts = Options::default();
        let result = (|| {
            if !socket_path.is_null() {
                // SAFETY: non-null and NUL-terminated per the contract.
                opts.socket = PathBuf::from(unsafe { str_arg(socket_path, "socket path") }?);
            }
            if !label.is_null() {
                // SAFETY: as above.
                opts.label = unsafe { str_arg(label, "label") }?.to_string();
            }
            opts.kind = ClientKind::try_from(kind)
                .ok()
                .filter(|k| *k != ClientKind::Unspecified)
                .ok_or_else(|| {
                    Error::new(
                        code::INVALID_ARGUMENT,
                        format!("unknown client kind {kind}"),
                    )
                })?;
            if timeout_ms > 0 {
                opts.timeout = Duration::from_millis(timeout_ms as u64);
            }
            Client::connect(&opts)
        })();
        let (client, rc, msg) = match result {
            Ok(c) => (Some(c), SHMOVER_OK, String::new()),
            Err(e) => (None, c_code(&e), e.message),
        };
        if rc != SHMOVER_OK {
            set_thread_error(rc, &msg);
        }
        let h = Box::new(ShmoverClient {
            client,
            last_code: rc,
            last_error: cstring(&msg),
        });
        // SAFETY: `out` is non-null and valid for a write.
        unsafe { *out = Box::into_raw(h) };
        rc
    })
}

/// Closes the connection (aborting any open backup) and frees the handle.
/// NULL is a no-op.
///
/// # Safety
///
/// `c` must come from `shmover_connect` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn shmover_disconnect(c: *mut ShmoverClient) {
    let _ = guard(|| {
        if !c.is_null() {
            // SAFETY: from Box::into_raw in shmover_connect, freed once.
            drop(unsafe { Box::from_raw(c) });
        }
        SHMOVER_OK
    });
}

/// The last error code on this handle (0 if the last call succeeded), or on
/// this thread when `c` is NULL.
///
/// # Safety
///
/// `c` must be a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_last_error_code(c: *const ShmoverClient) -> c_int {
    caught(SHMOVER_ERR_INTERNAL, || {
        // SAFETY: a live handle or null.
        match unsafe { c.as_ref() } {
            Some(h) => h.last_code,
            None => THREAD_ERROR
                .try_with(|e| e.try_borrow().map_or(0, |e| e.0))
                .unwrap_or(0),
        }
    })
}

/// 1 when the connection can serve no further call (a stream on it failed,
/// or the mover closed it) and must be disconnected, whatever the last
/// error's code; 0 when it can; 1 for NULL or a handle that never
/// connected.
///
/// # Safety
///
/// `c` must be a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_broken(c: *const ShmoverClient) -> c_int {
    caught(1, || {
        // SAFETY: a live handle or null.
        match unsafe { c.as_ref() }.and_then(|h| h.client.as_ref()) {
            Some(client) => c_int::from(client.is_broken()),
            None => 1,
        }
    })
}

/// The last error's sentence on this handle, or on this thread when `c` is
/// NULL. Never NULL; valid until the next call on the handle (or thread).
///
/// # Safety
///
/// `c` must be a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_last_error(c: *const ShmoverClient) -> *const c_char {
    caught(
        c"internal error in the shmover client library".as_ptr(),
        || {
            // SAFETY: a live handle or null.
            match unsafe { c.as_ref() } {
                Some(h) => h.last_error.as_ptr(),
                None => THREAD_ERROR
                    .try_with(|e| e.try_borrow().map_or(c"".as_ptr(), |e| e.1.as_ptr()))
                    .unwrap_or(c"".as_ptr()),
            }
        },
    )
}

/// Starts a backup of `name` in blocks of at most `block_size` bytes.
/// `metadata` is NULL or a NULL-terminated array of key, value strings.
///
/// # Safety
///
/// `c` a live handle; strings NUL-terminated; `metadata` NULL or an array
/// of string pairs ending with NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_open_write(
    c: *mut ShmoverClient,
    name: *const c_char,
    block_size: usize,
    size_hint: u64,
    metadata: *const *const c_char,
) -> c_int {
    with_client(c, |client| {
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        let mut meta = BTreeMap::new();
        if !metadata.is_null() {
            let mut i = 0;
            loop {
                // SAFETY: the array is NULL-terminated, in pairs.
                let k = unsafe { *metadata.add(i) };
                if k.is_null() {
                    break;
                }
                // SAFETY: as above.
                let v = unsafe { *metadata.add(i + 1) };
                // SAFETY: NUL-terminated strings per the contract.
                let (k, v) =
                    unsafe { (str_arg(k, "metadata key")?, str_arg(v, "metadata value")?) };
                meta.insert(k.to_string(), v.to_string());
                i += 2;
            }
        }
        client.open_write(name, block_size, size_hint, &meta)
    })
}

/// Waits for a free slot of the open backup and returns its address and
/// size; fill it, then `shmover_commit_block`.
///
/// # Safety
///
/// `c` a live handle; `buf` and `cap` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn shmover_reserve(
    c: *mut ShmoverClient,
    buf: *mut *mut c_void,
    cap: *mut usize,
) -> c_int {
    with_client(c, |client| {
        if buf.is_null() || cap.is_null() {
            return Err(Error::new(code::INVALID_ARGUMENT, "reserve: null output"));
        }
        let slot = client.reserve()?;
        // SAFETY: both outputs checked non-null.
        unsafe {
            *buf = slot.as_mut_ptr().cast();
            *cap = slot.len();
        }
        Ok(())
    })
}

/// Publishes `len` bytes of the reserved slot as one block.
///
/// # Safety
///
/// `c` a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmover_commit_block(c: *mut ShmoverClient, len: usize) -> c_int {
    with_client(c, |client| client.commit_block(len))
}

/// Ends the backup and waits until it is durable. `info` (may be NULL)
/// receives a description to free with `shmover_info_free`.
///
/// # Safety
///
/// `c` a live handle; `info` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmover_commit(
    c: *mut ShmoverClient,
    info: *mut *mut ShmoverInfo,
) -> c_int {
    with_client(c, |client| {
        let i = client.commit()?;
        if !info.is_null() {
            // SAFETY: checked non-null.
            unsafe { *info = Box::into_raw(Box::new(ShmoverInfo::new(i))) };
        }
        Ok(())
    })
}

/// Abandons the open backup; nothing of it becomes visible.
///
/// # Safety
///
/// `c` a live handle; `reason` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmover_abort(c: *mut ShmoverClient, reason: *const c_char) -> c_int {
    with_client(c, |client| {
        let reason = if reason.is_null() {
            "aborted by the client"
        } else {
            // SAFETY: per the contract.
            unsafe { str_arg(reason, "reason") }?
        };
        client.abort(reason)
    })
}

/// Starts a restore of `name`; `size` (may be NULL) receives its size.
///
/// # Safety
///
/// `c` a live handle; `name` NUL-terminated; `size` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn shmover_open_read(
    c: *mut ShmoverClient,
    name: *const c_char,
    block_size: usize,
    size: *mut u64,
) -> c_int {
    with_client(c, |client| {
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        let n = client.open_read(name, block_size)?;
        if !size.is_null() {
            // SAFETY: checked non-null.
            unsafe { *size = n };
        }
        Ok(())
    })
}

/// The next block of the restore: returns 0 with `buf`/`len` set, or
/// `SHMOVER_END` after the last block. The block stays valid until
/// `shmover_read_release` or the next call on the handle.
///
/// # Safety
///
/// `c` a live handle; `buf` and `len` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn shmover_read_next(
    c: *mut ShmoverClient,
    buf: *mut *const c_void,
    len: *mut usize,
) -> c_int {
    let mut end = false;
    let rc = with_client(c, |client| {
        if buf.is_null() || len.is_null() {
            return Err(Error::new(code::INVALID_ARGUMENT, "read: null output"));
        }
        match client.next_block()? {
            Some(b) => {
                // SAFETY: outputs checked non-null.
                unsafe {
                    *buf = b.as_ptr().cast();
                    *len = b.len();
                }
            }
            None => {
                end = true;
                // SAFETY: outputs checked non-null.
                unsafe {
                    *buf = std::ptr::null();
                    *len = 0;
                }
            }
        }
        Ok(())
    });
    if rc == SHMOVER_OK && end {
        SHMOVER_END
    } else {
        rc
    }
}

/// Gives the current restore block's slot back.
///
/// # Safety
///
/// `c` a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmover_read_release(c: *mut ShmoverClient) -> c_int {
    with_client(c, |client| client.release_block())
}

/// Ends the restore (at the end or early).
///
/// # Safety
///
/// `c` a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmover_close_read(c: *mut ShmoverClient) -> c_int {
    with_client(c, |client| client.close_read())
}

/// Describes `name`; free `*info` with `shmover_info_free`.
///
/// # Safety
///
/// `c` a live handle; `name` NUL-terminated; `info` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmover_stat(
    c: *mut ShmoverClient,
    name: *const c_char,
    info: *mut *mut ShmoverInfo,
) -> c_int {
    with_client(c, |client| {
        if info.is_null() {
            return Err(Error::new(code::INVALID_ARGUMENT, "stat: null output"));
        }
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        let i = client.stat(name)?;
        // SAFETY: checked non-null.
        unsafe { *info = Box::into_raw(Box::new(ShmoverInfo::new(i))) };
        Ok(())
    })
}

/// Lists objects whose names start with `prefix` (NULL: all), newest
/// first, at most `limit` (0: all); free `*list` with `shmover_list_free`.
///
/// # Safety
///
/// `c` a live handle; `prefix` NULL or NUL-terminated; `list` valid.
#[no_mangle]
pub unsafe extern "C" fn shmover_list(
    c: *mut ShmoverClient,
    prefix: *const c_char,
    limit: u32,
    list: *mut *mut ShmoverList,
) -> c_int {
    with_client(c, |client| {
        if list.is_null() {
            return Err(Error::new(code::INVALID_ARGUMENT, "list: null output"));
        }
        let prefix = if prefix.is_null() {
            ""
        } else {
            // SAFETY: per the contract.
            unsafe { str_arg(prefix, "prefix") }?
        };
        let items = client
            .list(prefix, limit)?
            .into_iter()
            .map(ShmoverInfo::new)
            .collect();
        // SAFETY: checked non-null.
        unsafe { *list = Box::into_raw(Box::new(ShmoverList { items })) };
        Ok(())
    })
}

/// Deletes `name`.
///
/// # Safety
///
/// `c` a live handle; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmover_delete(c: *mut ShmoverClient, name: *const c_char) -> c_int {
    with_client(c, |client| {
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        client.delete(name)
    })
}

/// Number of entries in a list (0 for NULL).
///
/// # Safety
///
/// `l` a live list or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_list_len(l: *const ShmoverList) -> usize {
    caught(0, || {
        // SAFETY: a live list or null.
        unsafe { l.as_ref() }.map_or(0, |l| l.items.len())
    })
}

/// Entry `i` of a list, owned by the list; NULL when out of range.
///
/// # Safety
///
/// `l` a live list or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_list_get(l: *const ShmoverList, i: usize) -> *const ShmoverInfo {
    caught(std::ptr::null(), || {
        // SAFETY: a live list or null.
        unsafe { l.as_ref() }
            .and_then(|l| l.items.get(i))
            .map_or(std::ptr::null(), |x| x as *const ShmoverInfo)
    })
}

/// Frees a list. NULL is a no-op.
///
/// # Safety
///
/// `l` from `shmover_list`, freed once.
#[no_mangle]
pub unsafe extern "C" fn shmover_list_free(l: *mut ShmoverList) {
    caught((), || {
        if !l.is_null() {
            // SAFETY: from Box::into_raw, freed once.
            drop(unsafe { Box::from_raw(l) });
        }
    })
}

/// Frees an info. NULL is a no-op.
///
/// # Safety
///
/// `i` from `shmover_stat` or `shmover_commit`, freed once.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_free(i: *mut ShmoverInfo) {
    caught((), || {
        if !i.is_null() {
            // SAFETY: from Box::into_raw, freed once.
            drop(unsafe { Box::from_raw(i) });
        }
    })
}

/// The object's name (owned by the info).
///
/// # Safety
///
/// `i` a live info.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_name(i: *const ShmoverInfo) -> *const c_char {
    caught(c"".as_ptr(), || {
        // SAFETY: a live info or null.
        unsafe { i.as_ref() }.map_or(c"".as_ptr(), |i| i.name.as_ptr())
    })
}

/// The object's size in bytes.
///
/// # Safety
///
/// `i` a live info or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_size(i: *const ShmoverInfo) -> u64 {
    caught(0, || {
        // SAFETY: a live info or null.
        unsafe { i.as_ref() }.map_or(0, |i| i.info.size)
    })
}

/// Creation time, milliseconds since the Unix epoch.
///
/// # Safety
///
/// `i` a live info or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_created_ms(i: *const ShmoverInfo) -> i64 {
    caught(0, || {
        // SAFETY: a live info or null.
        unsafe { i.as_ref() }.map_or(0, |i| i.info.created_unix_ms)
    })
}

/// The block size the backup was written with.
///
/// # Safety
///
/// `i` a live info or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_block_size(i: *const ShmoverInfo) -> u32 {
    caught(0, || {
        // SAFETY: a live info or null.
        unsafe { i.as_ref() }.map_or(0, |i| i.info.block_size)
    })
}

/// CRC32C of the whole object.
///
/// # Safety
///
/// `i` a live info or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_crc32c(i: *const ShmoverInfo) -> u32 {
    caught(0, || {
        // SAFETY: a live info or null.
        unsafe { i.as_ref() }.map_or(0, |i| i.info.crc32c)
    })
}

/// A metadata value given at open-for-write, or NULL if absent.
///
/// # Safety
///
/// `i` a live info or NULL; `key` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_meta(
    i: *const ShmoverInfo,
    key: *const c_char,
) -> *const c_char {
    caught(std::ptr::null(), || {
        // SAFETY: a live info or null.
        let Some(i) = (unsafe { i.as_ref() }) else {
            return std::ptr::null();
        };
        // SAFETY: NUL-terminated per the contract.
        let Ok(key) = (unsafe { str_arg(key, "key") }) else {
            return std::ptr::null();
        };
        i.meta
            .iter()
            .find(|(k, _)| k.to_bytes() == key.as_bytes())
            .map_or(std::ptr::null(), |(_, v)| v.as_ptr())
    })
}

/// Number of metadata entries.
///
/// # Safety
///
/// `i` a live info or NULL.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_meta_count(i: *const ShmoverInfo) -> usize {
    caught(0, || {
        // SAFETY: a live info or null.
        unsafe { i.as_ref() }.map_or(0, |i| i.meta.len())
    })
}

/// Metadata entry `idx` (in key order): sets `*key` and `*value` (owned by
/// the info) and returns 0, or `SHMOVER_ERR_INVALID_ARGUMENT` when out of
/// range.
///
/// # Safety
///
/// `i` a live info or NULL; `key` and `value` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn shmover_info_meta_at(
    i: *const ShmoverInfo,
    idx: usize,
    key: *mut *const c_char,
    value: *mut *const c_char,
) -> c_int {
    caught(SHMOVER_ERR_INTERNAL, || {
        // SAFETY: a live info or null.
        let entry = unsafe { i.as_ref() }.and_then(|i| i.meta.get(idx));
        match entry {
            Some((k, v)) if !key.is_null() && !value.is_null() => {
                // SAFETY: both outputs checked non-null.
                unsafe {
                    *key = k.as_ptr();
                    *value = v.as_ptr();
                }
                SHMOVER_OK
            }
            _ => code::INVALID_ARGUMENT as c_int,
        }
    })
}
