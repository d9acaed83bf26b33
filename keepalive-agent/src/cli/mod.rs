//! The command line: its arguments ([`args`], their value parsers
//! [`values`]) and the commands that ask a running agent over HTTP
//! ([`client`], [`advise`]), printing tables ([`table`]), readable
//! records ([`text`], also the agent's own stdout) and the workloads'
//! advice ([`workloads`]); shell completions, man
//! pages and password hashes ([`docs`]).
//! Depends on `model` (rules, advice), `api::advice` (its reply) and `keepalive-api`.

pub mod advise;
pub mod args;
pub mod client;
pub mod docs;
pub mod escape;
pub mod table;
pub mod text;
pub mod values;
pub mod workloads;
