package engine

import (
	"bytes"
	"slices"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/snapshot"
)

// Plan is what one configuration asks of the loop, built once when the
// configuration is loaded and never modified afterwards. A reload builds
// a new plan, compares it with the running one, and swaps them; a dump
// in flight keeps the plan it was made with (see nsPlan).
type Plan struct {
	// Gen numbers the plans of one run: 1 at start, one more per reload
	// applied.
	Gen    uint64
	Config *config.Config
	// Filter is nil when every socket is reported.
	Filter *filter.Filter
	// States is config.StateMask's: the states whose events are reported.
	States uint32
	// dumpTimeWait: the configured states name time_wait, so polls ask
	// for TIME_WAIT sockets even where destroy notifications report the
	// closes (see namespace.leaveOutTimeWait).
	dumpTimeWait bool
}

// NewPlan compiles cfg's filters into a plan numbered gen.
func NewPlan(cfg *config.Config, gen uint64) (*Plan, error) {
	f, err := filter.New(cfg.Filters)
	if err != nil {
		return nil, err
	}
	return &Plan{Gen: gen, Config: cfg, Filter: f, States: cfg.StateMask(),
		dumpTimeWait: slices.Contains(cfg.States, snapshot.StateTimeWait)}, nil
}

// nsPlan is a plan applied to one namespace: the requests the kernel
// serves there, with the filter's programs attached. Immutable, like its
// Plan: a dump job carries the nsPlan it was made with, so the loop knows
// what the kernel filtered out of that very dump, whatever reloads
// happened while it ran.
type nsPlan struct {
	*Plan
	reqs []diag.Request
	// kernelFiltered: every request carries the filter's program, so a
	// dump made with reqs holds only sockets that this plan's filter
	// matches.
	kernelFiltered bool
}

// forNamespace attaches p's kernel programs to reqs, the requests a
// namespace serves. A request for both families keeps one program only
// when both families compile to the same one; otherwise it is split per
// family.
func (p *Plan) forNamespace(reqs []diag.Request) *nsPlan {
	f := p.Filter
	np := &nsPlan{Plan: p, kernelFiltered: true}
	var out []diag.Request
	for _, r := range reqs {
		if r.Family == snapshot.FamilyAny && f != nil {
			bc4, ok4 := f.Bytecode(snapshot.FamilyIPv4)
			bc6, ok6 := f.Bytecode(snapshot.FamilyIPv6)
			if ok4 != ok6 || !bytes.Equal(bc4, bc6) {
				out = append(out, r.Split()...)
				continue
			}
		}
		out = append(out, r)
	}
	for i := range out {
		fam := out[i].Family
		if fam == snapshot.FamilyAny {
			fam = snapshot.FamilyIPv4 // same program for both, checked above
		}
		out[i].Bytecode = nil
		if bc, ok := f.Bytecode(fam); ok {
			out[i].Bytecode = bc
		} else if f != nil {
			np.kernelFiltered = false
		}
	}
	np.reqs = out
	return np
}

// filtered reports whether a dump made with made holds only sockets that
// p's filter matches. Only a dump made with this very plan, all of whose
// requests carried its programs, does: one made with an earlier plan was
// filtered by the kernel with the earlier filter, or not at all.
func (p *nsPlan) filtered(made *nsPlan) bool {
	return made == p && p.kernelFiltered
}

// keep drops from t, in place, the sockets p's filter does not report.
func (p *Plan) keep(t *snapshot.Table) {
	if p.Filter == nil {
		return
	}
	out := t.Sockets[:0]
	for i := range t.Sockets {
		if p.Filter.Match(&t.Sockets[i]) {
			out = append(out, t.Sockets[i])
		}
	}
	t.Sockets = out
}

// admit is the path of every socket the loop reports, after the socket
// filter: attribution annotates the event, then the filter's owner rules
// (process, user) judge it. It reports whether ev is to be written.
func (p *Plan) admit(tr *attribution.Tracker, ev *event.Event) bool {
	tr.AnnotateEvent(ev)
	return p.admitOwner(ev)
}

// admitOwner is admit's second half, for an event already annotated.
func (p *Plan) admitOwner(ev *event.Event) bool {
	return !p.Filter.NeedsOwner() || p.Filter.MatchOwner(&ev.Socket, ownerOf(ev))
}

// wantsState reports whether p reports events of sockets in state st.
func (p *Plan) wantsState(st snapshot.State) bool { return p.States&(1<<st) != 0 }

// ownerOf is what the filter's process and user rules see of an event's
// owner; nil when attribution does not know it.
func ownerOf(ev *event.Event) *filter.Owner {
	if ev.Process == nil {
		return nil
	}
	return &filter.Owner{Process: ev.Process.Comm, User: ev.Process.User, UID: ev.Process.UID, HasUID: true}
}
