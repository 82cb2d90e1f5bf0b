//! Root package: owns the `rsh-server` and `rsh-client` binaries (thin mains
//! over `rsh_cli::server` and `rsh_client::cli`) and hosts examples/ and tests/.
