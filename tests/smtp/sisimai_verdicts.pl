#!/usr/bin/perl
# Parse every message file in a directory with Sisimai (Debian: libsisimai-perl) and print one JSON
# object per recipient found: {"file", "recipient", "reason", "soft", "status", "agent"}.
# "soft" is Sisimai's call: 1 soft bounce, 0 hard bounce, -1 neither (auto-reply, complaint).
# One process for the whole batch: loading Sisimai costs more than parsing a message.
use strict;
use warnings;
use File::Basename qw(basename);
use JSON::PP;
use Sisimai;

my $dir = shift or die "usage: $0 DIRECTORY\n";
my $json = JSON::PP->new->canonical->utf8;
# delivered => 1 and vacation => 1: report success DSNs and auto-replies too, so that the
# caller can tell "parsed as not a bounce" from "not parsed at all".
my $found = Sisimai->make($dir, 'delivered' => 1, 'vacation' => 1) || [];
for my $e (@$found) {
    print $json->encode({
        file      => basename($e->origin),
        recipient => $e->recipient->address,
        reason    => $e->reason,
        soft      => 0 + ($e->softbounce eq '' ? -1 : $e->softbounce),
        status    => $e->deliverystatus,
        agent     => $e->smtpagent,
    }), "\n";
}
