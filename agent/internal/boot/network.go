package boot

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// The guest's one NIC. Its address and gateway come from isorun.ip and are the same in every
// sandbox (each sits in its own host namespace), so snapshots and forks need no re-addressing.
const (
	nicName        = "eth0"
	nicWait        = 2 * time.Second
	resolvConfPath = "/etc/resolv.conf"
)

// NetConfig is isorun.ip=ADDRESS/PREFIX:GATEWAY, e.g. 10.0.0.2/24:10.0.0.1. The gateway is
// also the guest's only resolver: hostd's DNS proxy answers there.
type NetConfig struct {
	Address *net.IPNet
	Gateway net.IP
}

func parseNetConfig(value string) (NetConfig, error) {
	cidr, gateway, ok := strings.Cut(value, ":")
	if !ok {
		return NetConfig{}, fmt.Errorf("isorun.ip=%q: want ADDRESS/PREFIX:GATEWAY", value)
	}
	ip, network, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return NetConfig{}, fmt.Errorf("isorun.ip=%q: %q is not an IPv4 address/prefix", value, cidr)
	}
	gw := net.ParseIP(gateway).To4()
	if gw == nil || !network.Contains(gw) {
		return NetConfig{}, fmt.Errorf("isorun.ip=%q: gateway %q is not an IPv4 address on %s", value, gateway, network)
	}
	network.IP = ip.To4()
	return NetConfig{Address: network, Gateway: gw}, nil
}

// setUpNetwork brings up lo and eth0 with the address and default route of cfg and points
// /etc/resolv.conf at the gateway.
func setUpNetwork(logger *log.Logger, cfg NetConfig) {
	if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
		logger.Printf("bringing up lo failed: %v", err)
	}
	nic, err := waitForLink(nicName, nicWait)
	if err != nil {
		logger.Printf("NETWORK DOWN: %v", err)
		return
	}
	if err := netlink.AddrReplace(nic, &netlink.Addr{IPNet: cfg.Address}); err != nil {
		logger.Printf("NETWORK DOWN: address %s on %s: %v", cfg.Address, nicName, err)
		return
	}
	if err := netlink.LinkSetUp(nic); err != nil {
		logger.Printf("NETWORK DOWN: %s up: %v", nicName, err)
		return
	}
	route := &netlink.Route{LinkIndex: nic.Attrs().Index, Gw: cfg.Gateway}
	if err := netlink.RouteReplace(route); err != nil {
		logger.Printf("default route via %s: %v", cfg.Gateway, err)
	}
	if err := writeResolvConf(resolvConfPath, cfg.Gateway); err != nil {
		logger.Printf("%s: %v", resolvConfPath, err)
	}
}

// waitForLink waits for the NIC's driver (loaded a moment ago) to register it.
func waitForLink(name string, limit time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(limit)
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %s after %s: %w", name, limit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeResolvConf replaces the image's resolv.conf, which is often a symlink into a resolver
// daemon's runtime folder that does not exist here.
func writeResolvConf(path string, resolver net.IP) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf("nameserver %s\noptions edns0\n", resolver)), 0o644)
}
