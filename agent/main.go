// Command isorun-agent is the isorun guest agent: PID 1 of the guest initramfs.
package main

func main() {}
