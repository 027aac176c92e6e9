//! Syscall numbers to names, so heatmaps are keyed by `read`, not by `0`.

use std::borrow::Cow;

mod tables;

/// The table for the architecture this binary was built for.
#[cfg(target_arch = "x86_64")]
const TABLE: &[&str] = &tables::X86_64;
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
const TABLE: &[&str] = &tables::GENERIC;
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const TABLE: &[&str] = &[];

/// The name of syscall `nr` on this architecture, or `syscall_<nr>` for a number the table
/// does not know (a kernel newer than the table, or a hole).
pub fn name(nr: i64) -> Cow<'static, str> {
    usize::try_from(nr)
        .ok()
        .and_then(|i| TABLE.get(i))
        .filter(|name| !name.is_empty())
        .map(|name| Cow::Borrowed(*name))
        .unwrap_or_else(|| Cow::Owned(format!("syscall_{nr}")))
}

/// Every syscall this architecture's table names, with its number, in number order.
pub fn all() -> impl Iterator<Item = (i64, &'static str)> {
    TABLE
        .iter()
        .enumerate()
        .filter(|(_, name)| !name.is_empty())
        .map(|(nr, name)| (nr as i64, *name))
}

/// The number of the syscall called `name` on this architecture.
pub fn number(name: &str) -> Option<i64> {
    all().find(|(_, n)| *n == name).map(|(nr, _)| nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn names_match_the_c_library() {
        assert_eq!(name(libc::SYS_read), "read");
        assert_eq!(name(libc::SYS_getppid), "getppid");
        assert_eq!(name(libc::SYS_nanosleep), "nanosleep");
        assert_eq!(name(libc::SYS_openat), "openat");
        assert_eq!(name(libc::SYS_io_uring_enter), "io_uring_enter");
        assert_eq!(name(libc::SYS_futex_waitv), "futex_waitv");
    }

    #[test]
    fn the_generic_table_is_the_arm64_numbering() {
        assert_eq!(tables::GENERIC[63], "read");
        assert_eq!(tables::GENERIC[79], "newfstatat");
        assert_eq!(tables::GENERIC[173], "getppid");
        assert_eq!(tables::GENERIC[435], "clone3");
        assert_eq!(tables::X86_64[110], "getppid");
        assert_eq!(tables::X86_64[462], "mseal");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn names_lead_back_to_numbers() {
        assert_eq!(number("getppid"), Some(libc::SYS_getppid));
        assert_eq!(number("nosuchcall"), None);
        assert!(all().all(|(nr, name)| number(name) == Some(nr)));
    }

    #[test]
    fn unknown_numbers_stay_visible() {
        assert_eq!(name(-1), "syscall_-1");
        assert_eq!(name(100_000), "syscall_100000");
    }
}
