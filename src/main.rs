fn main() -> std::process::ExitCode {
    streamsql::cli::main()
}
