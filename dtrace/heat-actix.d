/*
 * heat-actix: a D library for Oracle's DTrace for Linux built from source (dtrace-utils
 * 2.0.0-1.13.2) on a kernel that has no per-kernel D libraries.
 *
 * libdtrace loads a kernel module's types (from the kernel's BTF, turned into CTF) only when
 * something names them. Without per-kernel libraries nothing does, and enabling any probe
 * fails with "Module does not contain any CTF data". Naming one kernel type here, in a library
 * libdtrace reads at every open, loads vmlinux's types before the first probe is enabled.
 *
 * Install it into the D library directory libdtrace reads (the one `make install` created,
 * /usr/lib64/dtrace by default); when that directory is elsewhere, point libdtrace at it with
 * DTRACE_OPT_LIBDIR=DIR for heat-actix, or `dtrace -xlibdir=DIR` for dtrace(1).
 */

#pragma D depends_on module vmlinux

typedef struct task_struct heat_actix_task_t;
