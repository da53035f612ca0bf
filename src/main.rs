fn main() -> std::process::ExitCode {
    gradient_connector::cli::main()
}
