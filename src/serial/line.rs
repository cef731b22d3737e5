//! Time on the wire (docs/serial-protocol.md §2, "Time on the wire"): how long the line takes to
//! carry bytes at the configured settings. A serial device takes a whole frame into the kernel's
//! buffer at once and then sends it a character at a time; at 9600 baud the largest frame is
//! seconds on the wire, so every deadline the link measures from a send starts when the frame's
//! last byte has left the line, not when it was handed to the device.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Parity, SerialConfig};
use crate::later::Later;

/// How long one character takes on the line: start bit, data bits, parity bit, stop bits at the
/// baud rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTiming {
    char_time: Duration,
}

impl LineTiming {
    /// A line that takes no time (a duplex stream in memory).
    pub const INSTANT: Self = Self {
        char_time: Duration::ZERO,
    };

    /// A line of `bits_per_char` bits a character (start and stop bits included) at
    /// `baud_rate` bits a second (0 is taken as 1).
    pub fn new(baud_rate: u32, bits_per_char: u32) -> Self {
        let nanos = u64::from(bits_per_char)
            .saturating_mul(1_000_000_000)
            .checked_div(u64::from(baud_rate.max(1)))
            .unwrap_or(0);
        Self {
            char_time: Duration::from_nanos(nanos),
        }
    }

    /// The timing of the `[serial]` line settings.
    pub fn from_config(config: &SerialConfig) -> Self {
        // The start bit and the parity bit, if any.
        let start_and_parity = match config.parity {
            Parity::None => 1,
            Parity::Odd | Parity::Even => 2,
        };
        let bits = u32::from(config.data_bits)
            .saturating_add(u32::from(config.stop_bits))
            .saturating_add(start_and_parity);
        Self::new(config.baud_rate, bits)
    }

    /// One character on the wire.
    pub fn char_time(self) -> Duration {
        self.char_time
    }

    /// `bytes` characters on the wire, one after the other.
    pub fn wire_time(self, bytes: usize) -> Duration {
        self.char_time
            .saturating_mul(u32::try_from(bytes).unwrap_or(u32::MAX))
    }
}

/// When the line will have sent everything handed to the device so far, as far as the line
/// settings tell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineClock {
    timing: LineTiming,
    free_at: Instant,
}

impl LineClock {
    pub(crate) fn new(timing: LineTiming, now: Instant) -> Self {
        Self {
            timing,
            free_at: now,
        }
    }

    /// `bytes` were handed to the device at `now`: they go out after what it still holds.
    pub(crate) fn handed_over(&mut self, bytes: usize, now: Instant) {
        self.free_at = self.free_at.max(now).later(self.timing.wire_time(bytes));
    }

    /// When the last byte handed over so far will have left the line.
    pub(crate) fn free_at(&self) -> Instant {
        self.free_at
    }

    /// The device says it still holds `queued` bytes at `now` (a real UART's output queue,
    /// behind the estimate when flow control held it or the UART runs slower): they leave the
    /// line no earlier than their time on the wire from now.
    pub(crate) fn device_holds(&mut self, queued: usize, now: Instant) {
        self.free_at = self.free_at.max(now.later(self.timing.wire_time(queued)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(baud_rate: u32, data_bits: u8, parity: Parity, stop_bits: u8) -> SerialConfig {
        SerialConfig {
            baud_rate,
            data_bits,
            parity,
            stop_bits,
            ..SerialConfig::default()
        }
    }

    #[test]
    fn a_character_is_start_data_parity_and_stop_bits_at_the_baud_rate() {
        let n81 = LineTiming::from_config(&config(9600, 8, Parity::None, 1));
        assert_eq!(n81.char_time(), Duration::from_nanos(1_041_666));
        let e82 = LineTiming::from_config(&config(9600, 8, Parity::Even, 2));
        assert_eq!(e82.char_time(), Duration::from_nanos(1_250_000));
        let fast = LineTiming::from_config(&config(115_200, 7, Parity::Odd, 1));
        assert_eq!(fast.char_time(), Duration::from_nanos(86_805));
        // The largest frame (8198 bytes) at 9600 8N1: 8.54 s.
        assert_eq!(
            n81.wire_time(crate::serial::frame::MAX_FRAME).as_millis(),
            8539
        );
        assert_eq!(LineTiming::INSTANT.wire_time(8198), Duration::ZERO);
    }

    #[test]
    fn the_line_sends_one_byte_after_the_other_and_idles_in_between() {
        let timing = LineTiming::new(10_000, 10); // 1 ms a character
        let start = Instant::now();
        let mut clock = LineClock::new(timing, start);
        clock.handed_over(100, start);
        clock.handed_over(50, start + Duration::from_millis(10));
        assert_eq!(clock.free_at(), start + Duration::from_millis(150));
        // Idle line: a byte handed over later leaves a character time after it.
        clock.handed_over(1, start + Duration::from_secs(1));
        assert_eq!(clock.free_at(), start + Duration::from_millis(1001));
        // The device says it still holds 20 bytes: the estimate moves out, never in.
        clock.device_holds(20, start + Duration::from_millis(1001));
        assert_eq!(clock.free_at(), start + Duration::from_millis(1021));
        clock.device_holds(0, start + Duration::from_millis(1002));
        assert_eq!(clock.free_at(), start + Duration::from_millis(1021));
    }
}
