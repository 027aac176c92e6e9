//! The thin libdtrace glue of the consumer process: one handle, opened and compiled on request,
//! walked with removal, closed on stop. It only turns libdtrace's structures into byte slices
//! and record lists; [`super::layout`] does the decoding.
//!
//! Platforms: illumos-style libdtrace (illumos, FreeBSD, macOS, Windows) and Oracle's DTrace for
//! Linux (`dtrace_oracle`, set by build.rs when the header declares `dtrace_init`) differ in
//! `dtrace_go`'s arguments, the need for `dtrace_init`, and where keys, values and parameters
//! of an aggregation live.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::Mutex;

use super::child::{Failure, Tracer};
use super::layout::{self, Element, Flavor, Record};
use super::sys;
use super::wire::{Reply, Stage, WireAggregation, WireSeries};

/// libdtrace's D compiler keeps parser state in process-wide variables: one compile at a time,
/// whatever else this process might do.
static COMPILER: Mutex<()> = Mutex::new(());

/// Options every program gets (a value of `None` is a flag); a script's pragmas may change
/// them. The sizes are node-libdtrace's. libdtrace skips snapshots and buffer switches that
/// come sooner than `aggrate` / `switchrate` after the last (1 s by default), which would leave
/// a frame empty whenever a tick comes a little early, and Oracle's waits up to `switchrate`
/// for buffers; walks are paced by the session's tick instead. `quiet`, as `dtrace -q`: only
/// what the script prints is output, not a line per probe firing.
const OPTIONS: &[(&str, Option<&str>)] = &[
    ("bufsize", Some("4m")),
    ("aggsize", Some("4m")),
    ("aggrate", Some("10ms")),
    ("switchrate", Some("10ms")),
    ("quiet", None),
];
/// The environment variable that points libdtrace at its D libraries when they are not where
/// it was built to look (a DTrace installed under another prefix); dtrace(1) reads the same.
const LIBDIR_ENV: &str = "DTRACE_OPT_LIBDIR";
/// Most bytes of `printf` output read per walk; the rest is not read.
const OUTPUT_BYTES_PER_WALK: usize = 1 << 20;
/// Most `printf` lines, drop and error messages kept per walk; the rest are counted.
const MESSAGES_PER_WALK: usize = 256;

#[cfg(dtrace_oracle)]
const FLAVOR: Flavor = Flavor::Oracle;
#[cfg(not(dtrace_oracle))]
const FLAVOR: Flavor = Flavor::Illumos;

/// Oracle's data records are `[counter, value]`; the value is record 1 (`DT_AGGDATA_RECORD` in
/// its private dt_aggregate.h).
#[cfg(dtrace_oracle)]
const ORACLE_AGGDATA_RECORD: usize = 1;

/// What the handlers and the walk callback collect during one walk. Boxed, so the pointer
/// libdtrace holds for the handlers stays valid while the handle lives.
#[derive(Default)]
struct Collected {
    aggregations: Vec<WireAggregation>,
    drops: Vec<String>,
    errors: Vec<String>,
    /// Elements that could not be decoded; reported as errors of the walk.
    undecodable: Vec<String>,
    dropped_messages: usize,
    /// What the script printed, from the buffered handler (see [`Output`]).
    #[cfg(windows)]
    printed: Vec<u8>,
}

impl Collected {
    fn note(list: &mut Vec<String>, dropped: &mut usize, message: String) {
        if list.len() < MESSAGES_PER_WALK {
            list.push(message);
        } else {
            *dropped += 1;
        }
    }
}

/// One libdtrace handle and its compiled program.
pub struct Libdtrace {
    handle: *mut sys::dtrace_hdl_t,
    program: *mut sys::dtrace_prog_t,
    collected: Box<Collected>,
    output: Output,
    running: bool,
}

impl Libdtrace {
    pub fn new() -> Libdtrace {
        Libdtrace {
            handle: ptr::null_mut(),
            program: ptr::null_mut(),
            collected: Box::default(),
            output: Output::new(),
            running: false,
        }
    }

    /// libdtrace's message for its current error.
    fn error(&self) -> String {
        // SAFETY: the handle is open; dtrace_errno and dtrace_errmsg only read it, and the
        // message is a static or handle-owned string, copied before the next call.
        unsafe {
            let code = sys::dtrace_errno(self.handle);
            text(sys::dtrace_errmsg(self.handle, code))
        }
    }

    fn arg(&mut self) -> *mut c_void {
        (&mut *self.collected as *mut Collected).cast()
    }
}

/// Where libdtrace prints what the script prints (`printf`, `trace`): a temporary file, read
/// back after each walk. (A null FILE would route output to the buffered handler, but Oracle's
/// libdtrace never flushes probe output to it.)
#[cfg(not(windows))]
struct Output {
    file: *mut libc::FILE,
}

#[cfg(not(windows))]
impl Output {
    fn new() -> Output {
        Output {
            file: ptr::null_mut(),
        }
    }

    /// Nothing to install: output goes to the file.
    ///
    /// # Safety
    /// As for the other handlers: `handle` is open and `arg` is [`Libdtrace::arg`].
    unsafe fn install(_: *mut sys::dtrace_hdl_t, _: *mut c_void) -> bool {
        true
    }

    /// The FILE to hand this walk's `dtrace_work`: created on first use, emptied each walk.
    fn start(&mut self) -> Result<*mut sys::FILE, String> {
        if self.file.is_null() {
            // SAFETY: tmpfile has no preconditions; a null result is handled here.
            self.file = unsafe { libc::tmpfile() };
            if self.file.is_null() {
                return Err("cannot create a file for the output".into());
            }
        }
        // SAFETY: `file` is an open FILE of ours; rewind and ftruncate only empty it.
        unsafe {
            libc::rewind(self.file);
            libc::ftruncate(libc::fileno(self.file), 0);
        }
        Ok(self.file.cast())
    }

    /// What the script printed during the walk, at most [`OUTPUT_BYTES_PER_WALK`] bytes of it.
    fn finish(&mut self, _: &mut Collected) -> Vec<u8> {
        let mut bytes = vec![0u8; OUTPUT_BYTES_PER_WALK];
        // SAFETY: `file` is open (start ran before the walk); fread writes at most
        // `bytes.len()` bytes.
        let read = unsafe {
            libc::fflush(self.file);
            libc::rewind(self.file);
            libc::fread(bytes.as_mut_ptr().cast(), 1, bytes.len(), self.file)
        };
        bytes.truncate(read);
        bytes
    }

    fn close(&mut self) {
        if !self.file.is_null() {
            // SAFETY: `file` came from tmpfile and is closed once.
            unsafe { libc::fclose(self.file) };
            self.file = ptr::null_mut();
        }
    }
}

/// Where libdtrace prints what the script prints (`printf`, `trace`) on Windows: nowhere but
/// the buffered handler ([`on_buffered`]), which keeps it in [`Collected`]. A FILE must not
/// cross into dtrace.dll: it uses the UCRT's stdio, and the FILE of another C runtime (the
/// msvcrt.dll that the windows-gnu target links, or a static CRT) is not one it can write to.
/// Its libdtrace, OpenDTrace's illumos-derived one, hands each record's output to the handler
/// as the record is consumed.
#[cfg(windows)]
struct Output;

#[cfg(windows)]
impl Output {
    fn new() -> Output {
        Output
    }

    /// Installs [`on_buffered`], which a null FILE in `dtrace_work` requires.
    ///
    /// # Safety
    /// As for the other handlers: `handle` is open and `arg` is [`Libdtrace::arg`].
    unsafe fn install(handle: *mut sys::dtrace_hdl_t, arg: *mut c_void) -> bool {
        // SAFETY: the caller promises an open handle and our `arg`; the handler is an
        // `extern "C"` function of the declared type.
        unsafe { sys::dtrace_handle_buffered(handle, Some(on_buffered), arg) == 0 }
    }

    /// No FILE: a null one routes the walk's output to the buffered handler.
    fn start(&mut self) -> Result<*mut sys::FILE, String> {
        Ok(ptr::null_mut())
    }

    /// What the buffered handler collected during the walk (at most
    /// [`OUTPUT_BYTES_PER_WALK`] bytes).
    fn finish(&mut self, collected: &mut Collected) -> Vec<u8> {
        std::mem::take(&mut collected.printed)
    }

    fn close(&mut self) {}
}

impl Default for Libdtrace {
    fn default() -> Libdtrace {
        Libdtrace::new()
    }
}

/// A C string from libdtrace, copied; empty for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim_end()
        .to_owned()
}

impl Tracer for Libdtrace {
    fn compile(&mut self, script: &str) -> Result<(), Failure> {
        if !self.handle.is_null() {
            return Err((Stage::Protocol, "already compiled".into()));
        }
        let source = CString::new(script)
            .map_err(|_| (Stage::Compile, "the script contains a NUL byte".to_owned()))?;
        let _compiling = COMPILER.lock().unwrap_or_else(|e| e.into_inner());
        let mut err: c_int = 0;
        // SAFETY: dtrace_open takes the ABI version, flags and an out-pointer to an int.
        let handle = unsafe { sys::dtrace_open(sys::DTRACE_VERSION as c_int, 0, &mut err) };
        if handle.is_null() {
            // SAFETY: dtrace_errmsg accepts a null handle for dtrace_open's error codes.
            let message = unsafe { text(sys::dtrace_errmsg(ptr::null_mut(), err)) };
            return Err((Stage::Open, format!("cannot open DTrace: {message}")));
        }
        self.handle = handle;
        let libdir = std::env::var(LIBDIR_ENV)
            .ok()
            .map(|dir| ("libdir", Some(dir)));
        let options = OPTIONS
            .iter()
            .map(|(o, v)| (*o, v.map(str::to_owned)))
            .chain(libdir);
        for (option, value) in options {
            let name = CString::new(option).expect("no NUL");
            let value_c = match &value {
                None => None,
                Some(v) => Some(
                    CString::new(v.as_str())
                        .map_err(|_| (Stage::Open, format!("{LIBDIR_ENV} contains a NUL byte")))?,
                ),
            };
            let value_ptr = value_c.as_ref().map_or(ptr::null(), |v| v.as_ptr());
            // SAFETY: the handle is open; the name is NUL-terminated and the value is either
            // NUL-terminated or null (a flag, as dtrace(1) sets them); both outlive the call.
            if unsafe { sys::dtrace_setopt(handle, name.as_ptr(), value_ptr) } != 0 {
                let shown = value.unwrap_or_default();
                return Err((
                    Stage::Open,
                    format!("option {option}={shown}: {}", self.error()),
                ));
            }
        }
        // Oracle's libdtrace initialises its BPF side after the options are set.
        #[cfg(dtrace_oracle)]
        // SAFETY: the handle is open and its options are set, as dtrace_init requires.
        if unsafe { sys::dtrace_init(handle) } < 0 {
            return Err((
                Stage::Open,
                format!("cannot initialise DTrace: {}", self.error()),
            ));
        }
        let arg = self.arg();
        // SAFETY: the handle is open; the handlers are `extern "C"` functions of the declared
        // types, and `arg` points into `self.collected`, a Box that outlives the handle (stop
        // closes the handle before anything drops it).
        let installed = unsafe {
            sys::dtrace_handle_drop(handle, Some(on_drop), arg) == 0
                && sys::dtrace_handle_err(handle, Some(on_error), arg) == 0
                && Output::install(handle, arg)
        };
        if !installed {
            return Err((
                Stage::Open,
                format!("cannot install handlers: {}", self.error()),
            ));
        }
        // SAFETY: the handle is open; the source is NUL-terminated and outlives the call; no
        // macro arguments are passed (argc 0, argv null), which libdtrace accepts.
        let program = unsafe {
            sys::dtrace_program_strcompile(
                handle,
                source.as_ptr(),
                sys::DTRACE_PROBESPEC_NAME,
                0,
                0,
                ptr::null(),
            )
        };
        if program.is_null() {
            return Err((Stage::Compile, self.error()));
        }
        self.program = program;
        Ok(())
    }

    fn go(&mut self) -> Result<(), Failure> {
        if self.program.is_null() || self.running {
            return Err((
                Stage::Protocol,
                "nothing compiled, or already running".into(),
            ));
        }
        let mut info = sys::dtrace_proginfo_t::default();
        // SAFETY: the handle is open and `program` was compiled by it; `info` is a valid
        // out-parameter for the call.
        if unsafe { sys::dtrace_program_exec(self.handle, self.program, &mut info) } == -1 {
            return Err((Stage::Go, self.error()));
        }
        #[cfg(dtrace_oracle)]
        // SAFETY: the handle is open and its program executed; Oracle's dtrace_go takes flags.
        let started = unsafe { sys::dtrace_go(self.handle, 0) };
        #[cfg(not(dtrace_oracle))]
        // SAFETY: the handle is open and its program executed.
        let started = unsafe { sys::dtrace_go(self.handle) };
        if started != 0 {
            return Err((Stage::Go, self.error()));
        }
        self.running = true;
        Ok(())
    }

    fn walk(&mut self) -> Result<Reply, Failure> {
        if !self.running {
            return Err((Stage::Protocol, "not running".into()));
        }
        *self.collected = Collected::default();
        let output = self.output.start().map_err(|e| (Stage::Walk, e))?;
        let arg = self.arg();
        // SAFETY (all calls below): the handle is open and enabled; the callbacks are
        // `extern "C"` functions of the declared types; `arg` points into `self.collected`,
        // alive for the whole walk; `output` is an open FILE, or null with the buffered
        // handler installed.
        unsafe {
            // Status first: it runs the drop handler for dynamic and speculative drops.
            if sys::dtrace_status(self.handle) == -1 {
                return Err((Stage::Walk, self.error()));
            }
            let status =
                sys::dtrace_work(self.handle, output, Some(on_probe), Some(on_record), arg);
            if status == sys::DTRACE_WORKSTATUS_ERROR {
                return Err((Stage::Walk, self.error()));
            }
            if sys::dtrace_aggregate_snap(self.handle) != 0 {
                return Err((Stage::Walk, self.error()));
            }
            if sys::dtrace_aggregate_walk(self.handle, Some(on_aggregate), arg) != 0 {
                return Err((Stage::Walk, self.error()));
            }
        }
        let printed = self.output.finish(&mut self.collected);
        let printed = String::from_utf8_lossy(&printed);
        let collected = std::mem::take(&mut *self.collected);
        let mut errors = collected.errors;
        errors.extend(collected.undecodable);
        let mut output = Vec::new();
        let mut unkept = collected.dropped_messages;
        for line in printed.lines().filter(|l| !l.trim().is_empty()) {
            Collected::note(&mut output, &mut unkept, line.trim_end().to_owned());
        }
        if unkept > 0 {
            errors.push(format!(
                "{unkept} more lines and messages this interval were not kept"
            ));
        }
        Ok(Reply::Walked {
            aggregations: collected.aggregations,
            output,
            drops: collected.drops,
            errors,
        })
    }

    fn finish(&mut self) -> Result<Reply, Failure> {
        if !self.running {
            return Err((Stage::Protocol, "not running".into()));
        }
        // SAFETY: the handle is open and enabled; dtrace_stop disables tracing and fires END,
        // whose records and aggregations the walk below consumes, as dtrace(1) does at exit.
        if unsafe { sys::dtrace_stop(self.handle) } == -1 {
            return Err((Stage::Walk, self.error()));
        }
        let last = self.walk();
        // Stopped already: `stop` must not stop it twice.
        self.running = false;
        last
    }

    fn stop(&mut self) {
        self.output.close();
        if !self.handle.is_null() {
            // SAFETY: the handle is open; dtrace_stop disables tracing (harmless when it never
            // started) and dtrace_close frees the handle and its programs, after which neither
            // is used again.
            unsafe {
                if self.running {
                    sys::dtrace_stop(self.handle);
                }
                sys::dtrace_close(self.handle);
            }
        }
        self.handle = ptr::null_mut();
        self.program = ptr::null_mut();
        self.running = false;
    }
}

impl Drop for Libdtrace {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state behind a handler's `arg`.
///
/// # Safety
/// `arg` is the pointer [`Libdtrace::arg`] gave libdtrace, whose Box is alive.
unsafe fn collected<'a>(arg: *mut c_void) -> &'a mut Collected {
    // SAFETY: the caller promises `arg` is our live, exclusively used Collected.
    unsafe { &mut *arg.cast::<Collected>() }
}

unsafe extern "C" fn on_drop(drop: *const sys::dtrace_dropdata_t, arg: *mut c_void) -> c_int {
    // SAFETY: libdtrace passes a valid drop record and our `arg` (installed in compile).
    let (c, message) = unsafe { (collected(arg), text((*drop).dtdda_msg)) };
    Collected::note(&mut c.drops, &mut c.dropped_messages, message);
    sys::DTRACE_HANDLE_OK as c_int
}

unsafe extern "C" fn on_error(error: *const sys::dtrace_errdata_t, arg: *mut c_void) -> c_int {
    // SAFETY: libdtrace passes a valid error record and our `arg` (installed in compile).
    let (c, message) = unsafe { (collected(arg), text((*error).dteda_msg)) };
    Collected::note(&mut c.errors, &mut c.dropped_messages, message);
    sys::DTRACE_HANDLE_OK as c_int
}

/// Keeps what the script printed (Windows' [`Output`]), up to [`OUTPUT_BYTES_PER_WALK`]
/// bytes a walk; the rest is not kept, as with the file elsewhere.
#[cfg(windows)]
unsafe extern "C" fn on_buffered(data: *const sys::dtrace_bufdata_t, arg: *mut c_void) -> c_int {
    // SAFETY: libdtrace passes a valid buffer record, whose text is null or NUL-terminated and
    // valid during the call, and our `arg` (installed in compile).
    let (c, printed) = unsafe {
        let printed = (*data).dtbda_buffered;
        let printed = if printed.is_null() {
            &[][..]
        } else {
            CStr::from_ptr(printed).to_bytes()
        };
        (collected(arg), printed)
    };
    let room = OUTPUT_BYTES_PER_WALK.saturating_sub(c.printed.len());
    let kept = &printed[..printed.len().min(room)];
    c.printed.extend_from_slice(kept);
    sys::DTRACE_HANDLE_OK as c_int
}

unsafe extern "C" fn on_probe(_: *const sys::dtrace_probedata_t, _: *mut c_void) -> c_int {
    sys::DTRACE_CONSUME_THIS as c_int
}

unsafe extern "C" fn on_record(
    _: *const sys::dtrace_probedata_t,
    record: *const sys::dtrace_recdesc_t,
    _: *mut c_void,
) -> c_int {
    // A null record ends a probe's records; others are consumed (printf and friends print
    // through the buffered handler).
    if record.is_null() {
        sys::DTRACE_CONSUME_NEXT as c_int
    } else {
        sys::DTRACE_CONSUME_THIS as c_int
    }
}

fn record(r: &sys::dtrace_recdesc_t) -> Record {
    Record {
        action: r.dtrd_action,
        size: r.dtrd_size,
        offset: r.dtrd_offset,
    }
}

/// The aggregation name as D writes it, `@name`; libdtrace calls the anonymous one `_`, which
/// heat-actix announces (and sends) as `@`.
fn aggregation_name(raw: String) -> String {
    match raw.as_str() {
        "" | "_" | "@" | "@_" => "@".to_owned(),
        name if name.starts_with('@') => raw,
        name => format!("@{name}"),
    }
}

/// One aggregation element: decoded into the walk's results, then removed, so the next walk
/// sees only what was aggregated after this one (node-libdtrace's aggwalk).
unsafe extern "C" fn on_aggregate(data: *const sys::dtrace_aggdata_t, arg: *mut c_void) -> c_int {
    // SAFETY: libdtrace passes a valid element and our `arg`; the element and its description
    // are valid during the call, and the slices below stay within the sizes they describe.
    let (c, decoded) = unsafe { (collected(arg), element(data)) };
    match decoded {
        Ok((name, kind, series)) => {
            let wire = WireSeries::from(&series);
            match c.aggregations.iter_mut().find(|a| a.name == name) {
                Some(a) => a.series.push(wire),
                None => c.aggregations.push(WireAggregation {
                    name,
                    kind,
                    series: vec![wire],
                }),
            }
        }
        Err(e) => Collected::note(&mut c.undecodable, &mut c.dropped_messages, e),
    }
    sys::DTRACE_AGGWALK_REMOVE as c_int
}

type Decoded = (
    String,
    crate::aggregation::AggKind,
    crate::aggregation::Series,
);

/// The element's name, kind and series (illumos layout: keys and value in `dtada_data`).
///
/// # Safety
/// `data` is a valid aggregation element from a walk callback.
#[cfg(not(dtrace_oracle))]
unsafe fn element(data: *const sys::dtrace_aggdata_t) -> Result<Decoded, String> {
    // SAFETY: the caller promises a valid element; its description has `dtagd_nrecs` records
    // laid out from `dtagd_rec` (a C flexible array), and its data `dtada_size` bytes.
    unsafe {
        let desc = (*data).dtada_desc;
        let nrecs = (*desc).dtagd_nrecs as usize;
        if nrecs < 2 {
            return Err(format!("aggregation with {nrecs} records"));
        }
        let recs = std::slice::from_raw_parts(
            ptr::addr_of!((*desc).dtagd_rec).cast::<sys::dtrace_recdesc_t>(),
            nrecs,
        );
        let buffer =
            std::slice::from_raw_parts((*data).dtada_data.cast::<u8>(), (*data).dtada_size);
        let name = aggregation_name(text((*desc).dtagd_name));
        // Record 0 is the aggregation's id; the last is the aggregating action.
        let keys: Vec<Record> = recs[1..nrecs - 1].iter().map(record).collect();
        let value = record(&recs[nrecs - 1]);
        let element = Element {
            flavor: FLAVOR,
            action: value.action,
            data: layout::slice(buffer, &value).map_err(|e| format!("{name}: {e}"))?,
            sig: 0,
            normal: (*data).dtada_normal,
        };
        let (kind, series) =
            layout::decode_series(&keys, buffer, &element).map_err(|e| format!("{name}: {e}"))?;
        Ok((name, kind, series))
    }
}

/// The element's name, kind and series (Oracle layout: keys in `dtada_key`, value record
/// [`ORACLE_AGGDATA_RECORD`] of `dtada_data`, parameters in `dtagd_sig`).
///
/// # Safety
/// `data` is a valid aggregation element from a walk callback.
#[cfg(dtrace_oracle)]
unsafe fn element(data: *const sys::dtrace_aggdata_t) -> Result<Decoded, String> {
    // SAFETY: the caller promises a valid element; its description has `dtagd_nkrecs` key
    // records and two data records, its key `dtagd_ksize` and its data `dtagd_dsize` bytes.
    unsafe {
        let desc = &*(*data).dtada_desc;
        let nkrecs = desc.dtagd_nkrecs as usize;
        let krecs = std::slice::from_raw_parts(desc.dtagd_krecs, nkrecs);
        let drecs = std::slice::from_raw_parts(desc.dtagd_drecs, ORACLE_AGGDATA_RECORD + 1);
        let key =
            std::slice::from_raw_parts((*data).dtada_key.cast::<u8>(), desc.dtagd_ksize as usize);
        let buffer =
            std::slice::from_raw_parts((*data).dtada_data.cast::<u8>(), desc.dtagd_dsize as usize);
        let name = aggregation_name(text(desc.dtagd_name));
        // Key record 0 is the aggregation's variable id.
        let keys: Vec<Record> = krecs.iter().skip(1).map(record).collect();
        let value = record(&drecs[ORACLE_AGGDATA_RECORD]);
        let element = Element {
            flavor: FLAVOR,
            action: value.action,
            data: layout::slice(buffer, &value).map_err(|e| format!("{name}: {e}"))?,
            sig: desc.dtagd_sig,
            normal: desc.dtagd_normal,
        };
        let (kind, series) =
            layout::decode_series(&keys, key, &element).map_err(|e| format!("{name}: {e}"))?;
        Ok((name, kind, series))
    }
}
