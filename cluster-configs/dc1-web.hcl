# dc1's web node.
datacenter         = "dc1"
primary_datacenter = "dc1"
node_name          = "dc1-web"
data_dir           = "cluster-data/dc1-web"
bind_addr          = "127.0.1.3"
client_addr        = "127.0.1.3"
retry_join         = ["127.0.1.1"]
encrypt            = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="
log_level          = "INFO"

connect {
  enabled = true
}
enable_central_service_config = true

# web (the demo app on 127.0.1.3:9090) calls api in dc2 through 127.0.0.1:10000.
service {
  name = "web"
  port = 9090
  check {
    name     = "web app"
    tcp      = "127.0.1.3:9090"
    interval = "5s"
  }
  connect {
    sidecar_service {
      proxy {
        local_service_address = "127.0.1.3"
        upstreams = [
          {
            destination_name = "api"
            datacenter       = "dc2"
            local_bind_port  = 10000
          }
        ]
      }
    }
  }
}
