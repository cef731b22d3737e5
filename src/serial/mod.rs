//! Serial link protocol v1 to the terminal (`shared/spec/serial-link.md`).
