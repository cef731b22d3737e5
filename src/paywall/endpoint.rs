//! Every payment API call the client makes, as one table: its name in errors and logs, its
//! method, which API and key pair it uses, which envelope its answer comes in and whether it is
//! safe to repeat. [`PaywallClient`](super::PaywallClient) sends the calls and
//! [`ApiError`](super::ApiError) names the one that failed; how an answer is read is in
//! `answer.rs`.

use reqwest::Method;

/// One payment API call (docs/payment-api.md lists them with their paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    EstablishConnection,
    ConnectionDetail,
    ListConnections,
    UpdateConnection,
    DeleteConnection,
    Reconnect,
    Disconnect,
    ListTerminals,
    Sale,
    Cancel,
    ListPayments,
    QueryPayment,
    ApmUnlink,
    MasterpassUnlink,
    CheckoutDeactivate,
}

/// Which base address a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Physical,
    Payment,
}

/// Which header pair a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    Private,
    Public,
}

/// Which envelope the answer comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    Physical,
    Payment,
    Masterpass,
}

impl Endpoint {
    pub const ALL: [Endpoint; 15] = [
        Endpoint::EstablishConnection,
        Endpoint::ConnectionDetail,
        Endpoint::ListConnections,
        Endpoint::UpdateConnection,
        Endpoint::DeleteConnection,
        Endpoint::Reconnect,
        Endpoint::Disconnect,
        Endpoint::ListTerminals,
        Endpoint::Sale,
        Endpoint::Cancel,
        Endpoint::ListPayments,
        Endpoint::QueryPayment,
        Endpoint::ApmUnlink,
        Endpoint::MasterpassUnlink,
        Endpoint::CheckoutDeactivate,
    ];

    /// The operation's name in errors and logs.
    pub const fn operation(self) -> &'static str {
        match self {
            Endpoint::EstablishConnection => "establish connection",
            Endpoint::ConnectionDetail => "connection detail",
            Endpoint::ListConnections => "connection list",
            Endpoint::UpdateConnection => "update connection",
            Endpoint::DeleteConnection => "delete connection",
            Endpoint::Reconnect => "reconnect",
            Endpoint::Disconnect => "disconnect",
            Endpoint::ListTerminals => "terminal list",
            Endpoint::Sale => "async sale",
            Endpoint::Cancel => "async cancel",
            Endpoint::ListPayments => "payment list",
            Endpoint::QueryPayment => "payment query",
            Endpoint::ApmUnlink => "APM unlink",
            Endpoint::MasterpassUnlink => "Masterpass unlink",
            Endpoint::CheckoutDeactivate => "checkout deactivate",
        }
    }

    /// The `operation` label of its metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::EstablishConnection => "establish_connection",
            Endpoint::ConnectionDetail => "connection_detail",
            Endpoint::ListConnections => "connection_list",
            Endpoint::UpdateConnection => "update_connection",
            Endpoint::DeleteConnection => "delete_connection",
            Endpoint::Reconnect => "reconnect",
            Endpoint::Disconnect => "disconnect",
            Endpoint::ListTerminals => "terminal_list",
            Endpoint::Sale => "sale",
            Endpoint::Cancel => "cancel",
            Endpoint::ListPayments => "payment_list",
            Endpoint::QueryPayment => "query_payment",
            Endpoint::ApmUnlink => "apm_unlink",
            Endpoint::MasterpassUnlink => "masterpass_unlink",
            Endpoint::CheckoutDeactivate => "checkout_deactivate",
        }
    }

    /// Its place in [`ALL`](Self::ALL): its row of counters in the metrics.
    pub(crate) fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|endpoint| *endpoint == self)
            .unwrap_or_default()
    }

    /// Safe to repeat: retried, and an unreadable answer leaves no unknown outcome. A sale and
    /// establishing a connection are not: a lost answer may have created something.
    pub const fn idempotent(self) -> bool {
        !matches!(self, Endpoint::EstablishConnection | Endpoint::Sale)
    }

    pub(crate) fn method(self) -> Method {
        match self {
            Endpoint::ConnectionDetail | Endpoint::QueryPayment => Method::GET,
            Endpoint::UpdateConnection
            | Endpoint::Reconnect
            | Endpoint::Disconnect
            | Endpoint::CheckoutDeactivate => Method::PUT,
            Endpoint::DeleteConnection | Endpoint::MasterpassUnlink => Method::DELETE,
            Endpoint::EstablishConnection
            | Endpoint::ListConnections
            | Endpoint::ListTerminals
            | Endpoint::Sale
            | Endpoint::Cancel
            | Endpoint::ListPayments
            | Endpoint::ApmUnlink => Method::POST,
        }
    }

    pub(crate) fn api(self) -> Api {
        match self.envelope() {
            Envelope::Physical => Api::Physical,
            Envelope::Payment | Envelope::Masterpass => Api::Payment,
        }
    }

    pub(crate) fn auth(self) -> Auth {
        match self {
            Endpoint::ApmUnlink | Endpoint::CheckoutDeactivate => Auth::Public,
            _ => Auth::Private,
        }
    }

    pub(crate) fn envelope(self) -> Envelope {
        match self {
            Endpoint::ApmUnlink | Endpoint::CheckoutDeactivate => Envelope::Payment,
            Endpoint::MasterpassUnlink => Envelope::Masterpass,
            _ => Envelope::Physical,
        }
    }
}
