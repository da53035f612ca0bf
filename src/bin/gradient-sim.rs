fn main() -> std::process::ExitCode {
    gradient_connector::sim::main()
}
