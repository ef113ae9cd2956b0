"""What every runner of a model shares: the device (`device`), the precision and its autocast (`precision`),
process-wide torch settings (`settings`), torchrun (`distributed`) and derived seeds (`seeding`).
Imports only `alexnet.base`."""
