package config

// committedSecretHashes are the SHA-256 hashes (hex, sorted) of every credential-looking value committed
// in the shopmesh repository, refused in the prod and k8s profiles (CommittedSecret). Hashes, so that the
// list repeats no credential. TestCommittedSecretsAreRefused adds the missing ones when run with
// -update-committed-secrets; never remove one (a value once committed stays in the history).
func committedSecretHashes() []string {
	return []string{
		"093a32a3dd7f3573346cf30501664664331aa0440e23bc435e3506badd10c8e2",
		"148de9c5a7a44d19e56cd9ae1a554bf67847afb0c58f6e12fa29ac7ddfca9940",
		"1a7674eb4ee78df7e1ac439a93c3fa8e3c945784d4dec9fd8e3011738b2f1d62",
		"1dc188bf5bb347026048a21d462bb0d4305d1998766c31a8bcb8fc1ef7564e63",
		"264e968b8e945d347f7accd2b9a5ca95ec72690a23bc588da90b4b1e66b1c7b0",
		"30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4",
		"3b67a08241d142c3c71a4afcd3dd2cf38f66f7d129289ca5ff9b47cc4b21d150",
		"3cbb96cabc1cc581e3f7540eff4f7eafe3b1523f9e841eb5fe500619ba0f9267",
		"3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9",
		"4097889236a2af26c293033feb964c4cf118c0224e0d063fec0a89e9d0569ef2",
		"4202b2f0efdad0b6bb8b26a327e57189386b6db61dc4286d22018d6580306e4d",
		"516f4d881dcba4f7cd81b1226d0660bcb1b6bdfcbcb1300e997fd78328b2bc77",
		"52598a925f44fb510bb7ac62c9a9c76973d35f344b58447be0eabddd14572c8e",
		"62c70dc4422bb8d5ca614c331938d27ad3c82dbbace027e302376e094ac78a5e",
		"8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918",
		"9d1a667dd0caa71185e533a1f521d87e81bcd84c2d92969a4e8f09e85886b8a4",
		"afe20b21bc2eb1f7bb8ca5e68ec753314a5e6ad7a1294079d81b4bf9ad037d9e",
		"d476df57056e24ac4ae0acc9f2d5e975aafa66efd02be04e4123a97dd28d1aaf",
		"d74ff0ee8da3b9806b18c877dbf29bbde50b5bd8e4dad7a3a725000feb82e8f1",
		"d97404639cbe20fd53a10e65abb94edef3c2047e1bd415ae06fa8bada05b0101",
		"dfae6080a324277f73163ecec82f316e13421d0d2488cf888a3f9e46d468078f",
		"eecb436b778f786e93ba6a53f3ec97b4a2dcbe1f901414ba7e5a11b9aa9e3e06",
		"f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7",
		"f9b0078b5df596d2ea19010c001bbd009e651de2c57e8fb7e355f31eb9d3f739",
		"fe19b27ce8bd6c6dfd91079f9f990f26b5e771dde73adb52cf012ec01996b9b1",
	}
}
