//! [`Pod`]: plain data that crosses the kernel boundary as bytes (map keys and
//! values, ring buffer records), the same trait on both sides.

/// Plain data that can cross to and from the kernel as bytes: no padding, no
/// pointers to follow, every bit pattern valid.
///
/// Derive it for your `#[repr(C)]` structs with `#[derive(Pod)]` (from `sonde`
/// or `sonde_ebpf`, whose `Pod` names both the trait and the derive): the derive
/// refuses a struct without `#[repr(C)]`, with padding (add explicit padding
/// fields) or with a field that is not `Pod`.
///
/// # Safety
/// The type must be `Copy`, `#[repr(C)]` (or a primitive), without padding, and
/// valid for any bit pattern of its size.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: primitives are valid for any bit pattern and have no padding.
        unsafe impl Pod for $t {}
    )*};
}
pod!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize);
// SAFETY: arrays of Pod are Pod (no padding between elements of a Pod type).
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
