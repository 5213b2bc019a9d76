// Command vcsim-launcher starts govmomi's vSphere simulator (the library Debian ships
// in golang-github-vmware-govmomi-dev, which has no program of its own) on 127.0.0.1
// and prints one JSON line on stdout once it accepts connections:
//
//	{"url":"https://127.0.0.1:PORT/sdk","datastores":{"LocalDS_0":"/tmp/govcsim-..."}}
//
// The datastore directories are where the simulator keeps VM files; tests write disk
// images there and read them back through /folder. It stops (and removes those
// directories) on SIGTERM, SIGINT or when stdin closes.
//
// Flags: -listen HOST:PORT (default 127.0.0.1:0), -vms N (VMs per host, default 1),
// -tls (https with a self-signed certificate instead of plain http).
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	vms := flag.Int("vms", 1, "VMs per host")
	secure := flag.Bool("tls", false, "serve https with a self-signed certificate")
	flag.Parse()

	model := simulator.VPX()
	model.Host = 0 // only the cluster's hosts: fewer VMs to search
	model.Machine = *vms
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: create:", err)
		os.Exit(1)
	}
	defer model.Remove()
	model.Service.Listen = &url.URL{Host: *listen}
	if *secure {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()

	stores := map[string]string{}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		stores[ds.Name] = ds.Info.GetDatastoreInfo().Url
	}
	line, _ := json.Marshal(map[string]interface{}{"url": server.URL.String(), "datastores": stores})
	fmt.Println(string(line))

	done := make(chan struct{}, 1)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		done <- struct{}{}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-done:
	}
}
