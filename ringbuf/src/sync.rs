//! The one place the ring takes its atomics, locks and spin hints from.
//!
//! Under `--cfg loom` every type here is loom's model of it, so the whole
//! publication and wake-up protocol in [`crate::ring`] runs unchanged inside
//! loom's exhaustive scheduler. Nothing else in the crate names `std::sync`
//! directly (clippy's `disallowed-types` enforces it).

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicU32, AtomicU64, Ordering},
    Arc, Mutex,
};

#[cfg(not(loom))]
pub(crate) use self::std_impl::{AtomicU32, AtomicU64, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, Ordering},
    Arc,
};

/// Thin `repr(transparent)` wrappers over std's types, so the rest of the
/// crate names only these (clippy bans the std ones) and loom can swap them.
#[cfg(not(loom))]
#[allow(clippy::disallowed_types)]
mod std_impl {
    use std::sync::atomic::Ordering;

    macro_rules! atomic {
        ($name:ident, $int:ty) => {
            #[doc = concat!("An atomic `", stringify!($int), "` with the layout of the integer.")]
            #[derive(Debug, Default)]
            #[repr(transparent)]
            pub struct $name(std::sync::atomic::$name);

            impl $name {
                #[inline]
                pub const fn new(v: $int) -> Self {
                    Self(std::sync::atomic::$name::new(v))
                }
                #[inline]
                pub fn load(&self, order: Ordering) -> $int {
                    self.0.load(order)
                }
                #[inline]
                pub fn store(&self, v: $int, order: Ordering) {
                    self.0.store(v, order)
                }
                #[inline]
                pub fn swap(&self, v: $int, order: Ordering) -> $int {
                    self.0.swap(v, order)
                }
            }
        };
    }
    atomic!(AtomicU64, u64);
    atomic!(AtomicU32, u32);

    /// std's mutex, with the same `lock()` signature as loom's.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(std::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, T>> {
            self.0.lock()
        }
    }
}

/// A hint to the CPU that we are spinning; under loom, a yield so the model
/// can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// How many times a side re-checks before it arms its waiting flag and
/// sleeps. Loom gets none: spinning only multiplies the states it explores.
#[cfg(loom)]
pub(crate) const SPIN_LIMIT: u32 = 0;
#[cfg(not(loom))]
pub(crate) const SPIN_LIMIT: u32 = 200;

/// After spinning, how many times to `sched_yield` before sleeping. On a
/// two-core machine where the peer shares our core, yielding lets it run
/// without paying for an eventfd round trip.
#[cfg(loom)]
pub(crate) const YIELD_LIMIT: u32 = 0;
#[cfg(not(loom))]
pub(crate) const YIELD_LIMIT: u32 = 8;

#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
