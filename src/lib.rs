//! Root package: owns the `rsh-server` and `rsh-client` binaries (thin mains
//! over `rsh_cli::server` and `rsh_cli::client`) and hosts examples/ and tests/.
