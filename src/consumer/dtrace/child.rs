//! The DTrace consumer process: `heat-actix __dtrace-consumer` reads [`Request`]s on stdin and
//! answers each with one [`Reply`] line on stdout, driving one libdtrace handle. One process
//! per program, because Oracle's DTrace allows one consumer per process (a second handle fails
//! at `dtrace_go` even after the first is closed), libdtrace is MT-unsafe, and a libdtrace crash
//! then ends one program, not the server.

use std::io::{BufRead, Write};

use super::script;
use super::wire::{to_line, Reply, Request, Stage};

/// A failed request: which stage, and libdtrace's own message.
pub type Failure = (Stage, String);

/// What the request loop drives: libdtrace behind the `dtrace` feature, or a stand-in that
/// says it is missing.
pub trait Tracer {
    /// Opens the library, sets the options and compiles `script`.
    fn compile(&mut self, script: &str) -> Result<(), Failure>;
    /// Executes and enables the compiled program.
    fn go(&mut self) -> Result<(), Failure>;
    /// Everything aggregated since the last walk, removed as it is read; a `Walked` reply.
    fn walk(&mut self) -> Result<Reply, Failure>;
    /// Disables tracing, which fires `END`, and walks one last time; a `Walked` reply.
    fn finish(&mut self) -> Result<Reply, Failure>;
    /// Disables tracing and releases the handle. Idempotent.
    fn stop(&mut self);
}

/// Answers requests until `Stop` or the end of input (the parent went away).
pub fn serve(
    tracer: &mut dyn Tracer,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::Failed {
                stage: Stage::Protocol,
                message: format!("not a request: {e}"),
            },
            Ok(Request::Compile { script }) => {
                // Checked again here, so no path reaches libdtrace with a destructive script.
                match script::check_not_destructive(&script) {
                    Err(e) => Reply::Failed {
                        stage: Stage::Compile,
                        message: e.to_string(),
                    },
                    Ok(()) => answer(tracer.compile(&script), Reply::Compiled),
                }
            }
            Ok(Request::Go) => answer(tracer.go(), Reply::Running),
            Ok(Request::Walk) => tracer
                .walk()
                .unwrap_or_else(|(stage, message)| Reply::Failed { stage, message }),
            Ok(Request::Finish) => tracer
                .finish()
                .unwrap_or_else(|(stage, message)| Reply::Failed { stage, message }),
            Ok(Request::Stop) => {
                tracer.stop();
                output.write_all(to_line(&Reply::Stopped).as_bytes())?;
                output.flush()?;
                return Ok(());
            }
        };
        output.write_all(to_line(&reply).as_bytes())?;
        output.flush()?;
    }
    tracer.stop();
    Ok(())
}

fn answer(result: Result<(), Failure>, ok: Reply) -> Reply {
    match result {
        Ok(()) => ok,
        Err((stage, message)) => Reply::Failed { stage, message },
    }
}

/// The stand-in on builds without the `dtrace` feature: every compile fails, saying why.
pub struct Unavailable;

impl Tracer for Unavailable {
    fn compile(&mut self, _: &str) -> Result<(), Failure> {
        Err((
            Stage::Open,
            "this heat-actix was built without the `dtrace` feature (no libdtrace)".into(),
        ))
    }
    fn go(&mut self) -> Result<(), Failure> {
        Err((Stage::Protocol, "nothing compiled".into()))
    }
    fn walk(&mut self) -> Result<Reply, Failure> {
        Err((Stage::Protocol, "nothing running".into()))
    }
    fn finish(&mut self) -> Result<Reply, Failure> {
        self.walk()
    }
    fn stop(&mut self) {}
}

/// The child's entry point; its stdout is the protocol, written only by [`serve`].
pub fn main() -> i32 {
    #[cfg(feature = "dtrace")]
    let mut tracer = super::ffi::Libdtrace::new();
    #[cfg(not(feature = "dtrace"))]
    let mut tracer = Unavailable;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    match serve(&mut tracer, stdin.lock(), stdout.lock()) {
        Ok(()) => 0,
        Err(_) => 1, // the parent closed our pipes: nobody is left to tell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the loop asked for; walks report one drop.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
    }

    impl Tracer for Fake {
        fn compile(&mut self, script: &str) -> Result<(), Failure> {
            self.calls.push(format!("compile {script}"));
            if script.contains("bad") {
                return Err((Stage::Compile, "syntax error near \"bad\"".into()));
            }
            Ok(())
        }
        fn go(&mut self) -> Result<(), Failure> {
            self.calls.push("go".into());
            Ok(())
        }
        fn walk(&mut self) -> Result<Reply, Failure> {
            self.calls.push("walk".into());
            Ok(Reply::Walked {
                aggregations: vec![],
                output: vec![],
                drops: vec!["3 drops on CPU 0".into()],
                errors: vec![],
            })
        }
        fn finish(&mut self) -> Result<Reply, Failure> {
            self.calls.push("finish".into());
            Ok(Reply::Walked {
                aggregations: vec![],
                output: vec!["END".into()],
                drops: vec![],
                errors: vec![],
            })
        }
        fn stop(&mut self) {
            self.calls.push("stop".into());
        }
    }

    fn run(input: &str) -> (Vec<Reply>, Vec<String>) {
        let mut fake = Fake::default();
        let mut out = Vec::new();
        serve(&mut fake, input.as_bytes(), &mut out).unwrap();
        let replies = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (replies, fake.calls)
    }

    #[test]
    fn each_request_gets_one_reply_in_order() {
        let (replies, calls) = run(concat!(
            r#"{"op":"compile","script":"BEGIN{}"}"#,
            "\n",
            r#"{"op":"go"}"#,
            "\n\n",
            r#"{"op":"walk"}"#,
            "\n",
            r#"{"op":"stop"}"#,
            "\n",
            r#"{"op":"walk"}"#,
            "\n"
        ));
        assert_eq!(calls, ["compile BEGIN{}", "go", "walk", "stop"]);
        assert_eq!(replies.len(), 4, "{replies:?}");
        assert_eq!(replies[0], Reply::Compiled);
        assert_eq!(replies[1], Reply::Running);
        assert!(matches!(&replies[2], Reply::Walked { drops, .. } if drops.len() == 1));
        assert_eq!(replies[3], Reply::Stopped);
    }

    #[test]
    fn finish_walks_after_stopping_and_the_child_still_answers_stop() {
        let (replies, calls) = run(concat!(
            r#"{"op":"compile","script":"END{}"}"#,
            "\n",
            r#"{"op":"go"}"#,
            "\n",
            r#"{"op":"finish"}"#,
            "\n",
            r#"{"op":"stop"}"#,
            "\n"
        ));
        assert_eq!(calls, ["compile END{}", "go", "finish", "stop"]);
        assert!(matches!(&replies[2], Reply::Walked { output, .. } if output == &["END"]));
        assert_eq!(replies[3], Reply::Stopped);
    }

    #[test]
    fn failures_and_garbage_are_answered_not_fatal() {
        let (replies, calls) = run("{\"op\":\"compile\",\"script\":\"bad\"}\nnonsense\n");
        assert_eq!(
            replies,
            [
                Reply::Failed {
                    stage: Stage::Compile,
                    message: "syntax error near \"bad\"".into()
                },
                Reply::Failed {
                    stage: Stage::Protocol,
                    message: replies[1].clone().failed_message(),
                },
            ]
        );
        // End of input (the parent is gone) stops the tracer.
        assert_eq!(calls.last().map(String::as_str), Some("stop"));
    }

    #[test]
    fn destructive_scripts_never_reach_the_tracer() {
        let (replies, calls) =
            run("{\"op\":\"compile\",\"script\":\"BEGIN { system(\\\"id\\\"); }\"}\n");
        assert!(
            matches!(&replies[0], Reply::Failed { stage: Stage::Compile, message } if message.contains("destructive")),
            "{replies:?}"
        );
        assert_eq!(calls, ["stop"]);
    }

    #[test]
    fn without_libdtrace_the_child_says_so() {
        let mut out = Vec::new();
        serve(
            &mut Unavailable,
            "{\"op\":\"compile\",\"script\":\"BEGIN{}\"}\n".as_bytes(),
            &mut out,
        )
        .unwrap();
        let reply: Reply = serde_json::from_slice(&out).unwrap();
        assert!(
            matches!(&reply, Reply::Failed { stage: Stage::Open, message } if message.contains("dtrace")),
            "{reply:?}"
        );
    }

    impl Reply {
        fn failed_message(self) -> String {
            match self {
                Reply::Failed { message, .. } => message,
                other => panic!("not a failure: {other:?}"),
            }
        }
    }
}
