# dc2's api node.
datacenter         = "dc2"
primary_datacenter = "dc1"
node_name          = "dc2-api"
data_dir           = "cluster-data/dc2-api"
bind_addr          = "127.0.2.3"
client_addr        = "127.0.2.3"
retry_join         = ["127.0.2.1"]
encrypt            = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="
log_level          = "INFO"

connect {
  enabled = true
}
enable_central_service_config = true

# api (the demo app on 127.0.2.3:9090), reachable from other datacenters through the gateways.
service {
  name = "api"
  port = 9090
  check {
    name     = "api app"
    tcp      = "127.0.2.3:9090"
    interval = "5s"
  }
  connect {
    sidecar_service {
      proxy {
        # The app listens on the node's address, not on 127.0.0.1 (Consul's default).
        local_service_address = "127.0.2.3"
      }
    }
  }
}
