//! The supervisor: admits sessions up to `max_sessions`, keeps the registry of live sessions
//! (shared with HTTP handlers through a `DashMap`), keeps the session gauges true, and ends
//! every session at shutdown.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use dashmap::DashMap;

use crate::session::Evict;
use crate::telemetry::{Event, Refusal};

/// A live session, as the registry knows it.
pub struct SessionEntry {
    pub peer: String,
    pub ip: Option<IpAddr>,
    pub since: Instant,
    addr: Recipient<Evict>,
}

/// Live sessions by id.
pub type Registry = DashMap<String, SessionEntry>;

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `max_sessions` sessions are open already.
    #[error("server full: max_sessions = {max}")]
    Capacity { max: usize },
    /// This client address has `max_sessions_per_client` sessions open already.
    #[error("too many sessions from this address: max_sessions_per_client = {max}")]
    PerClient { max: usize },
}

impl Rejection {
    /// The `reason` label of `heat_sessions_rejected_total`.
    pub fn reason(&self) -> Refusal {
        match self {
            Rejection::Capacity { .. } => Refusal::Capacity,
            Rejection::PerClient { .. } => Refusal::PerClient,
        }
    }
}

/// The admission authority. Being one actor, it sees admissions one at a time, so the cap
/// holds without locks.
pub struct Supervisor {
    max_sessions: usize,
    max_per_client: usize,
    sessions: Arc<Registry>,
}

impl Supervisor {
    pub fn new(max_sessions: usize, max_per_client: usize, sessions: Arc<Registry>) -> Supervisor {
        crate::telemetry::metrics()
            .sessions_max
            .set(max_sessions as i64);
        Supervisor {
            max_sessions,
            max_per_client,
            sessions,
        }
    }

    fn check(&self, ip: Option<IpAddr>) -> Result<(), Rejection> {
        if self.sessions.len() >= self.max_sessions {
            return Err(Rejection::Capacity {
                max: self.max_sessions,
            });
        }
        if let Some(ip) = ip {
            if self.sessions.iter().filter(|e| e.ip == Some(ip)).count() >= self.max_per_client {
                return Err(Rejection::PerClient {
                    max: self.max_per_client,
                });
            }
        }
        Ok(())
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// A new session asks to be let in.
#[derive(Message)]
#[rtype(result = "Result<(), Rejection>")]
pub struct Admit {
    pub session: String,
    pub peer: String,
    pub ip: Option<IpAddr>,
    pub addr: Recipient<Evict>,
}

/// A session has ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: String,
    pub frames: u64,
}

/// Ends every session (shutdown); answers how many were asked to end.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct EvictAll;

impl Handler<Admit> for Supervisor {
    type Result = Result<(), Rejection>;

    fn handle(&mut self, admit: Admit, _: &mut Self::Context) -> Self::Result {
        if let Err(rejection) = self.check(admit.ip) {
            Event::SessionRejected {
                reason: rejection.reason(),
                peer: &admit.peer,
                detail: &rejection.to_string(),
            }
            .emit();
            return Err(rejection);
        }
        let entry = SessionEntry {
            peer: admit.peer.clone(),
            ip: admit.ip,
            since: Instant::now(),
            addr: admit.addr,
        };
        self.sessions.insert(admit.session.clone(), entry);
        Event::SessionAdmitted {
            session: &admit.session,
            peer: &admit.peer,
            active: self.sessions.len(),
        }
        .emit();
        Ok(())
    }
}

impl Handler<Leave> for Supervisor {
    type Result = ();

    fn handle(&mut self, leave: Leave, _: &mut Self::Context) {
        if self.sessions.remove(&leave.session).is_some() {
            Event::SessionEnded {
                session: &leave.session,
                frames: leave.frames,
                active: self.sessions.len(),
            }
            .emit();
        }
    }
}

impl Handler<EvictAll> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _: EvictAll, _: &mut Self::Context) -> usize {
        let mut n = 0;
        for entry in self.sessions.iter() {
            entry.addr.do_send(Evict);
            n += 1;
        }
        n
    }
}
