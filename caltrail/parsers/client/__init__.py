"""What a client holds: registry exports of `MSLicensing` and TSCTST output."""
