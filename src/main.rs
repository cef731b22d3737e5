//! The `pos-agent` command: everything lives in the library; this only hands over to it.

fn main() -> std::process::ExitCode {
    pos_agent::cli::main()
}
