package resolver_test

import "github.com/senderguard/senderguard/cache"

func cacheHooks() cache.Hooks { return cache.Hooks{} }
