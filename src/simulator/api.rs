//! A stateful simulator of the Paywall payment API.

/// Arguments of `pos-agent simulate-api`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {}

/// Runs `pos-agent simulate-api` until interrupted.
pub async fn run_command(_args: CommandArgs) -> anyhow::Result<()> {
    anyhow::bail!("the payment API simulator is not built yet")
}
