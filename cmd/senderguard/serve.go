package main

func runServe(args []string) int { return 2 }
func runCheckConfig(args []string) int { return 2 }
