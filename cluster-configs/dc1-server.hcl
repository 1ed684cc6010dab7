# dc1's server: holds its datacenter's CA signing key, answers RPC, joins the WAN pool.
datacenter         = "dc1"
primary_datacenter = "dc1"
node_name          = "dc1-server"
server             = true
bootstrap_expect   = 1
data_dir           = "cluster-data/dc1-server"
bind_addr          = "127.0.1.1"
client_addr        = "127.0.0.1"
log_level          = "INFO"

# Demo key only: make your own with `meshnode keygen`.
encrypt = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="

connect {
  enabled = true
}
enable_central_service_config = true

ports {
  grpc = 8502
}

# Send every cross-datacenter upstream through the local mesh gateway by default.
config_entries {
  bootstrap = [
    {
      Kind = "proxy-defaults"
      Name = "global"
      MeshGateway {
        Mode = "local"
      }
    }
  ]
}
