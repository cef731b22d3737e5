//! pos-agent: the daemon that sits between a card terminal's serial line and Paywall's
//! Physical POS payment API. One module per concern; `docs/architecture.md` draws the map.
//!
//! The public surface is what the binary (`cli::main`), the tests, the benches and the fuzz
//! targets use (docs/architecture.md, "Lint policy", lists it); every other module is private.

// The lint policy (docs/architecture.md, "Lint policy"). `unsafe_code` warns everywhere but at
// the two `SAFETY:` blocks that allow it; `unreachable_pub` keeps `pub` for the public surface.
// The pedantic lints chosen guard what matters in this code and that it passes today: casts of
// amounts and lengths that lose a sign or hide a lossy conversion, hand-written range checks
// instead of `try_from`, copies and clones that hide what is copied, wildcard arms that would
// swallow a new variant, loops and patterns written the long way. The rest of `clippy::pedantic`
// (must_use everywhere, `# Errors` sections, function length, doc backticks...) is style the
// project does not adopt.
#![warn(unreachable_pub, unsafe_code)]
#![warn(
    clippy::cast_lossless,
    clippy::cast_sign_loss,
    clippy::checked_conversions,
    clippy::cloned_instead_of_copied,
    clippy::explicit_into_iter_loop,
    clippy::explicit_iter_loop,
    clippy::flat_map_option,
    clippy::from_iter_instead_of_collect,
    clippy::implicit_clone,
    clippy::inefficient_to_string,
    clippy::manual_string_new,
    clippy::match_wildcard_for_single_variants,
    clippy::mut_mut,
    clippy::range_plus_one,
    clippy::string_add_assign,
    clippy::uninlined_format_args,
    clippy::unnested_or_patterns
)]

mod agent;
mod audit;
mod boot_clock;
mod build_info;
pub mod cli;
pub mod config;
#[cfg(feature = "simulators")]
mod conformance;
pub mod control;
#[cfg(feature = "simulators")]
mod demo;
pub mod ids;
mod later;
mod logging;
mod metrics;
mod outcome;
pub mod paywall;
mod retry;
pub mod serial;
#[cfg(feature = "simulators")]
pub mod simulator;
pub mod state;
mod sync;
pub mod systemd;
mod thread;
