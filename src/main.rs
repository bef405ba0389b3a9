use std::process::ExitCode;

fn main() -> ExitCode {
    postcanary::cli::main()
}
