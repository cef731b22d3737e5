//! Client for Paywall's PhysicalAPI and the PaymentAPI unlink/deactivate calls.
