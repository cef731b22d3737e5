//! A simulated card terminal: the other end of the serial line.

/// Arguments of `pos-agent simulate-terminal`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {}

/// Runs `pos-agent simulate-terminal` until interrupted.
pub async fn run_command(_args: CommandArgs) -> anyhow::Result<()> {
    anyhow::bail!("the terminal simulator is not built yet")
}
