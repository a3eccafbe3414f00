//! The `capaboost` binary: everything lives in [`capaboost::cli`].

fn main() -> std::process::ExitCode {
    capaboost::cli::main()
}
