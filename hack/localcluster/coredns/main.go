// CoreDNS with only the plugins the local cluster's Corefile uses
// (hack/localcluster/cluster_config.py), built as CoreDNS documents for custom
// builds: the upstream binary links every plugin, cloud SDKs included, which
// costs minutes of compiling for nothing used here.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
)

// The order plugins run in, as upstream's plugin.cfg orders them.
func init() {
	dnsserver.Directives = []string{"bind", "health", "errors", "cache", "kubernetes", "loop", "forward"}
}

func main() { coremain.Run() }
