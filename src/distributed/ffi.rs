//! The C API of the c10d shim (`cpp/c10d_shim.h`), and thin safe wrappers for its store.
//!
//! Every shim function catches every C++ exception and returns a status code with a malloc'd
//! message; [`call`] turns that into a `Result`.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::{null_mut, NonNull};
use std::time::Duration;

use torch_sys::C_tensor;

use crate::{Error, Result};

pub const GF_OK: c_int = 0;
pub const GF_EINVAL: c_int = 1;
pub const GF_ESTORE: c_int = 3;

pub const GF_REDUCE_SUM: c_int = 0;
pub const GF_REDUCE_AVG: c_int = 1;

#[repr(C)]
pub struct RawStore {
    _private: [u8; 0],
}

#[repr(C)]
pub struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    pub fn gf_string_free(s: *mut c_char);
    pub fn gf_bytes_free(p: *mut u8);
    pub fn gf_has_nccl() -> c_int;

    pub fn gf_store_open(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_store_clone(
        store: *mut RawStore,
        out: *mut *mut RawStore,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_store_free(store: *mut RawStore);
    pub fn gf_store_set(
        store: *mut RawStore,
        key: *const c_char,
        value: *const u8,
        len: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_store_get(
        store: *mut RawStore,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_store_check(
        store: *mut RawStore,
        key: *const c_char,
        exists: *mut c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_store_add(
        store: *mut RawStore,
        key: *const c_char,
        delta: i64,
        result: *mut i64,
        err: *mut *mut c_char,
    ) -> c_int;

    pub fn gf_group_new_gloo(
        store: *mut RawStore,
        prefix: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        ifnames: *const c_char,
        out: *mut *mut RawGroup,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_group_new_nccl(
        store: *mut RawStore,
        prefix: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        device: c_int,
        out: *mut *mut RawGroup,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_group_free(group: *mut RawGroup, abort: c_int);

    pub fn gf_all_reduce(
        group: *mut RawGroup,
        tensors: *const *mut C_tensor,
        n: usize,
        op: c_int,
        bucket_bytes: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_broadcast(
        group: *mut RawGroup,
        tensors: *const *mut C_tensor,
        n: usize,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_all_gather(
        group: *mut RawGroup,
        input: *const C_tensor,
        out: *mut *mut C_tensor,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn gf_barrier(group: *mut RawGroup, err: *mut *mut c_char) -> c_int;
    pub fn gf_set_grad(var: *mut C_tensor, grad: *const C_tensor, err: *mut *mut c_char) -> c_int;
}

/// A failed shim call: its status code and message.
#[derive(Debug, Clone)]
pub struct ShimError {
    pub code: c_int,
    pub msg: String,
}

/// Runs a shim function that reports errors through its last argument.
pub fn call(f: impl FnOnce(*mut *mut c_char) -> c_int) -> std::result::Result<(), ShimError> {
    let mut err: *mut c_char = null_mut();
    let code = f(&mut err);
    if code == GF_OK {
        return Ok(());
    }
    let msg = if err.is_null() {
        "no message (the shim could not allocate one)".to_string()
    } else {
        // SAFETY: the shim sets err to a NUL-terminated string from strdup, freed here once.
        let m = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { gf_string_free(err) };
        m
    };
    Err(ShimError { code, msg })
}

pub fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::distributed(format!("{what} {s:?} contains a NUL byte")))
}

pub fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// A client (and in the process hosting it, the server) of a c10d TCPStore.
pub struct Store {
    raw: NonNull<RawStore>,
}

// SAFETY: c10d's TCPStore serialises its operations with a mutex of its own; the handle is only
// freed once, by Drop.
unsafe impl Send for Store {}

impl Store {
    pub fn open(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> std::result::Result<Store, ShimError> {
        let c_host = CString::new(host).map_err(|_| ShimError {
            code: GF_EINVAL,
            msg: format!("host {host:?} contains a NUL byte"),
        })?;
        let world = c_int::try_from(world_size).unwrap_or(c_int::MAX);
        let mut raw = null_mut();
        call(|err| unsafe {
            gf_store_open(
                c_host.as_ptr(),
                port,
                c_int::from(is_server),
                world,
                millis(timeout),
                &mut raw,
                err,
            )
        })?;
        Self::wrap(raw)
    }

    fn wrap(raw: *mut RawStore) -> std::result::Result<Store, ShimError> {
        NonNull::new(raw).map(|raw| Store { raw }).ok_or(ShimError {
            code: GF_ESTORE,
            msg: "the shim returned no store".into(),
        })
    }

    /// A second connection to the same store, for another thread.
    pub fn try_clone(&self) -> std::result::Result<Store, ShimError> {
        let mut raw = null_mut();
        call(|err| unsafe { gf_store_clone(self.raw.as_ptr(), &mut raw, err) })?;
        Self::wrap(raw)
    }

    pub fn as_ptr(&self) -> *mut RawStore {
        self.raw.as_ptr()
    }

    fn key(key: &str) -> std::result::Result<CString, ShimError> {
        CString::new(key).map_err(|_| ShimError {
            code: GF_EINVAL,
            msg: format!("store key {key:?} contains a NUL byte"),
        })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> std::result::Result<(), ShimError> {
        let k = Self::key(key)?;
        call(|err| unsafe {
            gf_store_set(
                self.raw.as_ptr(),
                k.as_ptr(),
                value.as_ptr(),
                value.len(),
                err,
            )
        })
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> std::result::Result<Vec<u8>, ShimError> {
        let k = Self::key(key)?;
        let mut p: *mut u8 = null_mut();
        let mut len = 0usize;
        call(|err| unsafe { gf_store_get(self.raw.as_ptr(), k.as_ptr(), &mut p, &mut len, err) })?;
        if p.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: the shim malloc'd len bytes at p; copied, then freed once.
        let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
        unsafe { gf_bytes_free(p) };
        Ok(v)
    }

    /// Whether `key` is set (never waits).
    pub fn check(&self, key: &str) -> std::result::Result<bool, ShimError> {
        let k = Self::key(key)?;
        let mut exists: c_int = 0;
        call(|err| unsafe { gf_store_check(self.raw.as_ptr(), k.as_ptr(), &mut exists, err) })?;
        Ok(exists != 0)
    }

    /// Adds `delta` to the counter `key` (created at 0) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> std::result::Result<i64, ShimError> {
        let k = Self::key(key)?;
        let mut out = 0i64;
        call(|err| unsafe { gf_store_add(self.raw.as_ptr(), k.as_ptr(), delta, &mut out, err) })?;
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from gf_store_open/clone and is freed only here.
        unsafe { gf_store_free(self.raw.as_ptr()) }
    }
}
