#!/usr/bin/env python
"""Protocol C (streaming replay, ML-100K) -- candidate blend + GBDT reranker, self-contained.

Usage:  /work/main/.venv/bin/python protocol_c_rerank.py [--mode test|validate] [--workdir DIR]

  test     : components trained on events [0, 80000), replay [80000, 100000)  (the reported number)
  validate : same recipe shifted inside the training 80 %: replay [60000, 80000), reranker trained
             on replays that end at 60000 (nothing at or after 80000 is read for scoring/labels)

Every prediction for replay event t uses only events < t (and t's user id and timestamp):
  * level-1 components are fitted on the events before the replay start and updated online
    (per-user state) and retrained every 1000 replay events (2000 for SeqLin2) on all past events;
  * the reranker is trained on earlier replays (each a 10,000-event replay with its own
    components trained on the events before it), and refreshed every 5000 replay events with the
    (logged features, observed next event) pairs of the replay so far.
"""
import argparse, os, time, json
import numpy as np, pandas as pd, scipy.sparse as sp
from threadpoolctl import threadpool_limits
from collections import Counter

D = '/work/shared/data/ml-100k/'
NI, NU, K = 1682, 943, 10

# --------------------------------------------------------------------------- data
df = pd.read_csv(D + 'ml-100k.inter', sep='\t')
df.columns = ['user', 'item', 'rating', 'ts']
df = df.sort_values('ts', kind='stable').reset_index(drop=True)      # ties keep file order
U_ = df.user.values.astype(np.int64) - 1
I_ = df.item.values.astype(np.int64) - 1
R_ = df.rating.values.astype(np.float64)
T_ = df.ts.values.astype(np.int64)
NEV = len(U_)

ITEMS = pd.read_csv(D + 'ml-100k.item', sep='\t')
ITEMS.columns = ['item', 'title', 'year', 'genres']
ITEMS = ITEMS.set_index('item').reindex(np.arange(1, NI + 1))
YEAR = pd.to_numeric(ITEMS.year, errors='coerce').values.astype(float)
YEAR[np.isnan(YEAR)] = np.nanmedian(YEAR)
GEN = ITEMS.genres.fillna('').str.get_dummies(sep=' ').values.astype(np.float32)

PREV = np.full(NEV, -1)
_last = np.full(NU, -1)
for _t in range(NEV):
    PREV[_t] = _last[U_[_t]]; _last[U_[_t]] = _t


# --------------------------------------------------------------------------- helpers
def zscore(S):
    S = S.astype(np.float32)
    m = S.mean(1, keepdims=True); sd = S.std(1, keepdims=True)
    return (S - m) / np.where(sd > 0, sd, 1.0)


def seen_mask(s, e):
    seen = np.zeros((NU, NI), bool)
    seen[U_[:s], I_[:s]] = True
    out = np.zeros((e - s, NI), bool)
    for t in range(s, e):
        out[t - s] = seen[U_[t]]
        seen[U_[t], I_[t]] = True
    return out


def ranks_of_target(S, seen, tg):
    """0-based rank of the target among unseen movies (ties -> lower movie index first)."""
    S = np.where(seen, -np.inf, S)
    n = len(tg); st = S[np.arange(n), tg][:, None]
    idx = np.arange(NI)[None, :]
    return (S > st).sum(1) + ((S == st) & (idx < tg[:, None])).sum(1)


def hr_mrr(r):
    return float(np.mean(r < K)), float(np.mean(np.where(r < K, 1.0 / (r + 1), 0.0)))


def ease_B(X, lam):
    G = (X.T @ X).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    with threadpool_limits(2, 'blas'):
        P = np.linalg.inv(G)
    B = P / (-np.diag(P))
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32)


def sittings(t_end, gap):
    sid = np.zeros(t_end, np.int64); last_t = np.full(NU, -10**12); cur = np.full(NU, -1); n = 0
    for t in range(t_end):
        u = U_[t]
        if T_[t] - last_t[u] > gap:
            cur[u] = n; n += 1
        sid[t] = cur[u]; last_t[u] = T_[t]
    return sid, n


# --------------------------------------------------------------------------- level-1 components
class Base:
    retrain_every = 0
    start = 0

    def maybe_retrain(self, t):
        if self.retrain_every and t > self.start and (t - self.start) % self.retrain_every == 0:
            self.fit(t)


class Pop(Base):
    """interaction counts over past events (optionally only the last `window` events)."""
    def __init__(self, window=None):
        self.window = window

    def init(self, s):
        self.c = np.zeros(NI); self.buf = []
        for t in range(0 if self.window is None else max(0, s - self.window), s):
            self.update(U_[t], I_[t], R_[t], T_[t])

    def score(self, u, ts):
        return self.c

    def update(self, u, i, r, ts):
        self.c[i] += 1
        if self.window:
            self.buf.append(i)
            if len(self.buf) > self.window:
                self.c[self.buf[-self.window - 1]] -= 1


class PosPop(Base):
    """popularity among past events at a similar position of their user's history:
    bucket b = floor(2*log2(pos+1)); score = sum_b' exp(-|b-b'|) C[b', i]; optional time decay."""
    def __init__(self, half_life=None):
        self.hl = half_life

    def bucket(self, p):
        return int(np.log2(p + 1) * 2.0)

    def init(self, s):
        nb = self.bucket(1000) + 1
        self.C = np.zeros((nb, NI)); self.cnt = np.zeros(NU, int)
        b = np.arange(nb); self.Kmat = np.exp(-np.abs(b[:, None] - b[None, :]))
        self.t_ref = T_[s - 1]
        for t in range(s):
            self.update(U_[t], I_[t], R_[t], T_[t])

    def score(self, u, ts):
        return self.Kmat[self.bucket(self.cnt[u])] @ self.C

    def update(self, u, i, r, ts):
        w = 2.0 ** ((ts - self.t_ref) / self.hl) if self.hl else 1.0
        self.C[self.bucket(self.cnt[u]), i] += w; self.cnt[u] += 1


class BayesAvg(Base):
    """shrunk mean rating (sum r + 100*mu)/(n + 100) over past events."""
    def init(self, s):
        self.n = np.bincount(I_[:s], minlength=NI).astype(float)
        self.sr = np.bincount(I_[:s], weights=R_[:s], minlength=NI)
        self.tot = [self.sr.sum(), self.n.sum()]

    def score(self, u, ts):
        mu = self.tot[0] / self.tot[1]
        return (self.sr + 100 * mu) / (self.n + 100)

    def update(self, u, i, r, ts):
        self.n[i] += 1; self.sr[i] += r; self.tot[0] += r; self.tot[1] += 1


class Ease(Base):
    """EASE over users' binary histories, user score = sum of B rows of the history."""
    def __init__(self, lam=500.0, retrain_every=0):
        self.lam, self.retrain_every = lam, retrain_every

    def fit(self, t):
        X = sp.csr_matrix((np.ones(t), (U_[:t], I_[:t])), shape=(NU, NI)); X.sum_duplicates(); X.data[:] = 1
        self.B = ease_B(X, self.lam)
        self.S = np.asarray(X @ self.B, dtype=np.float32)

    def init(self, s):
        self.start = s; self.fit(s)

    def score(self, u, ts):
        return self.S[u]

    def update(self, u, i, r, ts):
        self.S[u] += self.B[i]


class SessEase(Base):
    """EASE over 'sittings' (a user's events split where idle > gap s); applied to the user's
    last `lastk` movies weighted decay**rank (rank 0 = newest)."""
    def __init__(self, lam=500.0, gap=60, lastk=20, decay=0.8, retrain_every=0):
        self.lam, self.gap, self.lastk, self.decay, self.retrain_every = lam, gap, lastk, decay, retrain_every

    def fit(self, t):
        sid, n = sittings(t, self.gap)
        X = sp.csr_matrix((np.ones(t), (sid, I_[:t])), shape=(n, NI)); X.sum_duplicates(); X.data[:] = 1
        self.B = ease_B(X, self.lam)

    def init(self, s):
        self.start = s; self.fit(s)
        self.hist = [[] for _ in range(NU)]
        for t in range(s):
            self.hist[U_[t]].append(I_[t])
        self.w = self.decay ** np.arange(self.lastk)

    def score(self, u, ts):
        h = self.hist[u][-self.lastk:][::-1]
        return self.w[:len(h)] @ self.B[h] if h else np.zeros(NI, np.float32)

    def update(self, u, i, r, ts):
        self.hist[u].append(i)


class ALS(Base):
    """implicit ALS (64 factors, reg 0.5, confidence 1+10*r/5); user vector = exact fold-in of the
    growing history (per-user normal equations updated online)."""
    def __init__(self, factors=64, reg=0.5, alpha=10.0, iters=15, retrain_every=0):
        self.f, self.reg, self.alpha, self.iters, self.retrain_every = factors, reg, alpha, iters, retrain_every

    def conf(self, r):
        return 1.0 + self.alpha * r / 5.0

    def fit(self, t):
        from implicit.als import AlternatingLeastSquares
        C = sp.csr_matrix((self.conf(R_[:t]), (U_[:t], I_[:t])), shape=(NU, NI), dtype=np.float32)
        with threadpool_limits(1, 'blas'):
            m = AlternatingLeastSquares(factors=self.f, regularization=self.reg, alpha=1.0, iterations=self.iters,
                                        use_gpu=False, random_state=0, calculate_training_loss=False)
            m.fit(C, show_progress=False)
        Y = np.asarray(m.item_factors, np.float64); k = Y.shape[1]
        self.Y = Y; self.base = Y.T @ Y + self.reg * np.eye(k)
        self.A = np.zeros((NU, k, k)); self.b = np.zeros((NU, k))
        for u in range(NU):
            a, e = C.indptr[u], C.indptr[u + 1]
            if e > a:
                y = Y[C.indices[a:e]]; c = C.data[a:e].astype(np.float64)
                self.A[u] = (y.T * (c - 1)) @ y; self.b[u] = y.T @ c
        self.n = np.diff(C.indptr).copy()

    def init(self, s):
        self.start = s; self.fit(s)

    def score(self, u, ts):
        if self.n[u] == 0:
            return np.zeros(NI, np.float32)
        return (self.Y @ np.linalg.solve(self.base + self.A[u], self.b[u])).astype(np.float32)

    def update(self, u, i, r, ts):
        c = self.conf(r); y = self.Y[i]
        self.A[u] += (c - 1) * np.outer(y, y); self.b[u] += c * y; self.n[u] += 1


class SKNN(Base):
    """session kNN over past sittings (gap 60 s): query = last 20 movies weighted 0.9**rank;
    sim(n) = sum of query weights of shared movies / sqrt(len n); top-200 sittings (other users) vote."""
    def __init__(self, gap=60, L=20, decay=0.9, k=200):
        self.gap, self.L, self.decay, self.k = gap, L, decay, k

    def init(self, s):
        cap = 40000
        self.X = np.zeros((cap, NI), np.float32); self.len = np.zeros(cap); self.owner = np.full(cap, -1)
        self.n = 0; self.cur = np.full(NU, -1); self.last = np.full(NU, -10**12)
        self.hist = [[] for _ in range(NU)]; self.w = self.decay ** np.arange(self.L)
        for t in range(s):
            self.update(U_[t], I_[t], R_[t], T_[t])

    def score(self, u, ts):
        h = self.hist[u][-self.L:][::-1]
        if not h:
            return np.zeros(NI, np.float32)
        n = self.n
        sim = self.X[:n, h] @ self.w[:len(h)] / np.maximum(self.len[:n], 1) ** 0.5
        sim[self.owner[:n] == u] = 0
        k = min(self.k, n); top = np.argpartition(-sim, k - 1)[:k]
        return sim[top] @ self.X[top]

    def update(self, u, i, r, ts):
        if ts - self.last[u] > self.gap:
            self.cur[u] = self.n; self.owner[self.n] = u; self.n += 1
        c = self.cur[u]
        if self.X[c, i] == 0:
            self.X[c, i] = 1; self.len[c] += 1
        self.last[u] = ts; self.hist[u].append(i)


class SeqUKNN(Base):
    """sequence-aware user kNN: neighbours = the 50 users whose histories best cover the query
    (last 20 movies, weights 0.85**rank, / n_v**0.3); a neighbour votes for each of its movies with
    sum_k w_k [v has h_k] exp(-|pos_v(i) - pos_v(h_k)| / 10) (what it rated around the shared movies)."""
    def __init__(self, L=20, decay=0.85, k=50, tau=10.0, norm_pow=0.3):
        self.L, self.decay, self.k, self.tau, self.norm_pow = L, decay, k, tau, norm_pow

    def init(self, s):
        self.P = np.full((NU, NI), np.nan, np.float32); self.X = np.zeros((NU, NI), np.float32)
        self.cnt = np.zeros(NU, int); self.hist = [[] for _ in range(NU)]; self.w = self.decay ** np.arange(self.L)
        for t in range(s):
            self.update(U_[t], I_[t], R_[t], T_[t])

    def score(self, u, ts):
        h = self.hist[u][-self.L:][::-1]
        if not h:
            return np.zeros(NI, np.float32)
        w = self.w[:len(h)]
        sim = self.X[:, h] @ w / np.maximum(self.cnt, 1) ** self.norm_pow
        sim[u] = 0
        nb = np.argpartition(-sim, self.k - 1)[:self.k]; nb = nb[sim[nb] > 0]
        if len(nb) == 0:
            return np.zeros(NI, np.float32)
        A = self.P[nb][:, h]; Pn = self.P[nb]; Wt = np.zeros_like(Pn)
        for l in range(len(h)):
            a = A[:, l]; ok = ~np.isnan(a)
            if ok.any():
                Wt[ok] += w[l] * np.nan_to_num(np.exp(-np.abs(Pn[ok] - a[ok, None]) / self.tau), nan=0.0)
        return (sim[nb, None] * Wt).sum(0)

    def update(self, u, i, r, ts):
        if np.isnan(self.P[u, i]):
            self.P[u, i] = self.cnt[u]; self.X[u, i] = 1; self.cnt[u] += 1
        self.hist[u].append(i)


class SeqLin(Base):
    """learned transitions: ridge regression (lam 1000) of the one-hot next movie on
    x_t = sum_{k<L} 0.8**k e(previous k-th movie of the user)."""
    def __init__(self, L=20, decay=0.8, lam=1000.0, retrain_every=0):
        self.L, self.decay, self.lam, self.retrain_every = L, decay, lam, retrain_every

    def context_rows(self, tt):
        rows, cols, vals = [], [], []; p = PREV[tt]
        for k in range(self.L):
            ok = p >= 0
            if not ok.any():
                break
            r = np.flatnonzero(ok); pp = p[ok]
            rows.append(r); cols.append(I_[pp]); vals.append(np.full(len(r), self.decay ** k))
            p = np.where(ok, PREV[np.maximum(p, 0)], -1)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(tt), NI))

    def fit(self, t):
        tt = np.arange(t); X = self.context_rows(tt)
        keep = np.asarray(X.sum(1)).ravel() > 0; X = X[keep]; y = I_[tt[keep]]
        Y = sp.csr_matrix((np.ones(len(y)), (np.arange(len(y)), y)), shape=(len(y), NI))
        G = (X.T @ X).toarray(); G[np.diag_indices_from(G)] += self.lam
        with threadpool_limits(2, 'blas'):
            self.B = np.linalg.solve(G, (X.T @ Y).toarray()).astype(np.float32)

    def init(self, s):
        self.start = s; self.fit(s)
        self.hist = [[] for _ in range(NU)]
        for t in range(s):
            self.hist[U_[t]].append(I_[t])
        self.w = self.decay ** np.arange(self.L)

    def score(self, u, ts):
        h = self.hist[u][-self.L:][::-1]
        return self.w[:len(h)] @ self.B[h] if h else np.zeros(NI, np.float32)

    def update(self, u, i, r, ts):
        self.hist[u].append(i)


class SeqLin2(Base):
    """unified linear next-movie model: context = [last 20 movies weighted 0.8**k |
    whole history * n**-0.5], ridge (lam 1000) onto the one-hot next movie."""
    def __init__(self, L=20, decay=0.8, lam=1000.0, hpow=0.5, retrain_every=0):
        self.L, self.decay, self.lam, self.hpow, self.retrain_every = L, decay, lam, hpow, retrain_every

    def X_rows(self, t_end):
        tt = np.arange(t_end); rows, cols, vals = [], [], []; p = PREV[tt]
        for k in range(self.L):
            ok = p >= 0
            if not ok.any():
                break
            r = np.flatnonzero(ok); pp = p[ok]
            rows.append(r); cols.append(I_[pp]); vals.append(np.full(len(r), self.decay ** k))
            p = np.where(ok, PREV[np.maximum(p, 0)], -1)
        Us = U_[:t_end]; order = np.argsort(Us, kind='stable')
        _, starts = np.unique(Us[order], return_index=True); ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts, ends):
            ev = order[a:b]
            if len(ev) < 2:
                continue
            kk, jj = np.tril_indices(len(ev), -1)
            rows.append(ev[kk]); cols.append(I_[ev[jj]] + NI); vals.append(kk.astype(float) ** (-self.hpow))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(t_end, 2 * NI))

    def fit(self, t):
        X = self.X_rows(t); keep = np.diff(X.indptr) > 0; X = X[keep]; y = I_[:t][keep]
        Y = sp.csr_matrix((np.ones(len(y)), (np.arange(len(y)), y)), shape=(len(y), NI))
        G = (X.T @ X).toarray(); G[np.diag_indices_from(G)] += self.lam
        with threadpool_limits(2, 'blas'):
            self.B = np.linalg.solve(G, (X.T @ Y).toarray()).astype(np.float32)
        H = sp.csr_matrix((np.ones(t), (U_[:t], I_[:t])), shape=(NU, NI))
        self.Hs = np.asarray(H @ self.B[NI:], dtype=np.float32); self.n = np.bincount(U_[:t], minlength=NU)

    def init(self, s):
        self.start = s
        self.hist = [[] for _ in range(NU)]
        for t in range(s):
            self.hist[U_[t]].append(I_[t])
        self.w = self.decay ** np.arange(self.L); self.fit(s)

    def score(self, u, ts):
        h = self.hist[u][-self.L:][::-1]
        if not h:
            return np.zeros(NI, np.float32)
        return self.w[:len(h)] @ self.B[h] + self.n[u] ** (-self.hpow) * self.Hs[u]

    def update(self, u, i, r, ts):
        self.hist[u].append(i); self.Hs[u] += self.B[NI + i]; self.n[u] += 1


class YearCtx(Base):
    """log Laplace-kernel (bw 1 year) density of the release years of the last 5 movies (0.8**rank)."""
    def init(self, s):
        yrs = np.arange(1920, 2000)
        self.ybin = np.clip(YEAR, 1920, 1999).astype(int) - 1920
        self.Kern = np.exp(-np.abs(yrs[:, None] - yrs[None, :]) / 1.0)
        self.hist = [[] for _ in range(NU)]; self.w = 0.8 ** np.arange(5)
        for t in range(s):
            self.hist[U_[t]].append(I_[t])

    def score(self, u, ts):
        h = self.hist[u][-5:][::-1]
        if not h:
            return np.zeros(NI, np.float32)
        w = self.w[:len(h)] / self.w[:len(h)].sum()
        return np.log((w @ self.Kern[self.ybin[h]])[self.ybin] + 1e-3)

    def update(self, u, i, r, ts):
        self.hist[u].append(i)


def content_matrix():
    toks = [[] for _ in range(NI)]
    for i, g in enumerate(ITEMS.genres.fillna('')):
        toks[i] += ['g=' + x for x in g.split()]
    for i in range(NI):
        toks[i].append('dec=%d' % (int(YEAR[i]) // 10))
    link = pd.read_csv(D + 'ml-100k.link', sep='\t'); link.columns = ['item', 'ent']
    e2i = dict(zip(link.ent, link.item - 1))
    kg = pd.read_csv(D + 'ml-100k.kg', sep='\t'); kg.columns = ['h', 'r', 't']
    kg = kg[kg.r.isin(['film.film.actor', 'film.film.directed_by', 'film.film.written_by', 'film.film.produced_by'])]
    for h, r, t in zip(kg.h, kg.r, kg.t):
        if h in e2i:
            toks[e2i[h]].append(r.split('.')[-1] + '=' + t)
    dfc = Counter(x for tk in toks for x in set(tk))
    vocab = {x: j for j, x in enumerate(sorted(k for k, v in dfc.items() if v >= 2))}
    rows, cols, vals = [], [], []
    for i, tk in enumerate(toks):
        for x in set(tk):
            if x in vocab:
                rows.append(i); cols.append(vocab[x]); vals.append(np.log(NI / dfc[x]))
    M = sp.csr_matrix((vals, (rows, cols)), shape=(NI, len(vocab)))
    nrm = np.sqrt(np.asarray(M.multiply(M).sum(1)).ravel()); nrm[nrm == 0] = 1
    return (sp.diags(1 / nrm) @ M).tocsr()


class ContentCtx(Base):
    """TF-IDF (genres, decade, KG actors/directors/writers/producers) similarity to the last 10 movies."""
    def init(self, s):
        self.M = content_matrix(); self.hist = [[] for _ in range(NU)]; self.w = 0.8 ** np.arange(10)
        for t in range(s):
            self.hist[U_[t]].append(I_[t])

    def score(self, u, ts):
        h = self.hist[u][-10:][::-1]
        return self.M @ (self.M[h].T @ self.w[:len(h)]) if h else np.zeros(NI, np.float32)

    def update(self, u, i, r, ts):
        self.hist[u].append(i)


RT = 1000
MAKERS = {
    'pop': lambda: Pop(),
    'pospop': lambda: PosPop(),
    'pospop3d': lambda: PosPop(half_life=3 * 86400),
    'popw': lambda: Pop(window=1000),
    'bayes': lambda: BayesAvg(),
    'ease500_rt': lambda: Ease(500, retrain_every=RT),
    'sess500_rt': lambda: SessEase(500, retrain_every=RT),
    'sess_last1_rt': lambda: SessEase(500, lastk=1, retrain_every=RT),
    'sess_gap0_rt': lambda: SessEase(500, gap=0, retrain_every=RT),
    'als_rt': lambda: ALS(retrain_every=RT),
    'sknn': lambda: SKNN(),
    'suknn': lambda: SeqUKNN(),
    'seqlin_rt': lambda: SeqLin(retrain_every=RT),
    'seq_last1_rt': lambda: SeqLin(L=1, retrain_every=RT),
    'seqlin2_rt': lambda: SeqLin2(retrain_every=2 * RT),
    'year': lambda: YearCtx(),
    'content': lambda: ContentCtx(),
}
ZC = ['pop', 'pospop', 'pospop3d', 'ease500_rt', 'sess500_rt', 'als_rt', 'sknn', 'seqlin_rt', 'year', 'bayes',
      'popw', 'sess_last1_rt', 'seq_last1_rt', 'seqlin2_rt', 'sess_gap0_rt', 'content', 'suknn']
RC = ['pospop', 'pospop3d', 'ease500_rt', 'sess500_rt', 'als_rt', 'sknn', 'seqlin_rt', 'popw', 'sess_last1_rt',
      'seq_last1_rt', 'seqlin2_rt', 'sess_gap0_rt', 'suknn']
CANDC = ['pospop', 'ease500_rt', 'sess500_rt', 'als_rt', 'sknn', 'seqlin_rt', 'bayes', 'suknn', 'seqlin2_rt']


def run_component(name, s, e, workdir):
    """score matrix (e-s, NI): row t-s = scores for event t's user computed before event t."""
    path = f'{workdir}/{name}_{s}_{e}.npy'
    if os.path.exists(path):
        return np.load(path)
    t0 = time.time(); c = MAKERS[name](); c.start = s; c.init(s)
    out = np.zeros((e - s, NI), np.float32)
    for t in range(s, e):
        c.maybe_retrain(t)
        out[t - s] = c.score(U_[t], T_[t])
        c.update(U_[t], I_[t], R_[t], T_[t])
    np.save(path, out)
    print(f'    {name} [{s},{e}) {time.time() - t0:.0f}s', flush=True)
    return out


# --------------------------------------------------------------------------- linear blend (candidates)
def fit_blend(Zs, seen, tg, init, grid=(0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3), rounds=3):
    def obj(w):
        r = ranks_of_target(sum(a * z for a, z in zip(w, Zs) if a), seen, tg)
        return np.mean(r < K) + 0.1 * np.mean(np.where(r < K, 1.0 / (r + 1), 0))
    w = list(init); best = obj(w)
    for _ in range(rounds):
        improved = False
        for j in range(len(Zs)):
            for g in grid:
                if g == w[j]:
                    continue
                w2 = list(w); w2[j] = g
                if sum(w2) == 0:
                    continue
                o = obj(w2)
                if o > best + 1e-9:
                    best, w, improved = o, w2, True
        if not improved:
            break
    return w


# --------------------------------------------------------------------------- features
def event_feats(s, e):
    cnt = np.zeros(NU, int); last = np.zeros(NU); sitlen = np.zeros(NU, int); batch = np.zeros(NU, int)
    rsum = np.zeros(NU); lastr = np.zeros(NU); hist = [[] for _ in range(NU)]
    out = np.zeros((e - s, 8), np.float32); lastk = np.full((e - s, 5), -1, int)
    for t in range(e):
        u = U_[t]
        if t >= s:
            g = T_[t] - last[u] if cnt[u] else -1
            out[t - s] = [np.log1p(cnt[u]), np.log1p(g) if g >= 0 else -1, float(g == 0),
                          sitlen[u] if (cnt[u] and g <= 60) else 0, batch[u] if (cnt[u] and g == 0) else 0,
                          rsum[u] / cnt[u] if cnt[u] else 0, lastr[u], pd.Timestamp(T_[t], unit='s').year]
            h = hist[u][-5:][::-1]; lastk[t - s, :len(h)] = h
        g = T_[t] - last[u] if cnt[u] else 10**9
        sitlen[u] = sitlen[u] + 1 if g <= 60 else 1
        batch[u] = batch[u] + 1 if g == 0 else 1
        cnt[u] += 1; last[u] = T_[t]; rsum[u] += R_[t]; lastr[u] = R_[t]; hist[u].append(I_[t])
    return out, lastk


def item_time_state(s, e):
    first = np.full(NI, np.inf); c1 = np.zeros(NI); c7 = np.zeros(NI); lo1 = lo7 = 0
    F1 = np.zeros((e - s, NI), np.float32); F7 = np.zeros((e - s, NI), np.float32); FF = np.zeros((e - s, NI), np.float32)
    for t in range(e):
        if t >= s:
            now = T_[t]
            while T_[lo1] < now - 86400 and lo1 < t:
                c1[I_[lo1]] -= 1; lo1 += 1
            while T_[lo7] < now - 7 * 86400 and lo7 < t:
                c7[I_[lo7]] -= 1; lo7 += 1
            F1[t - s] = c1; F7[t - s] = c7
            FF[t - s] = np.log1p(np.maximum(now - first, 0) / 86400.0)
        i = I_[t]
        if first[i] == np.inf:
            first[i] = T_[t]
        c1[i] += 1; c7[i] += 1
    FF[~np.isfinite(FF)] = -1
    return F1, F7, FF


def rank_matrix(S, seen):
    S = np.where(seen, -np.inf, S)
    order = np.argsort(-S, axis=1, kind='stable')
    rk = np.empty_like(order, dtype=np.int16)
    np.put_along_axis(rk, order, np.broadcast_to(np.arange(NI, dtype=np.int16), order.shape), axis=1)
    return rk


def build_features(s, e, candw, workdir, N=100):
    path = f'{workdir}/feat_{s}_{e}.npz'
    if os.path.exists(path):
        z = np.load(path, allow_pickle=True)
        return z['X'], z['y'], list(z['names'])
    print(f'  replay [{s},{e}): components', flush=True)
    seen = seen_mask(s, e); tg = I_[s:e]; n = e - s
    cs = sum(w * zscore(run_component(c, s, e, workdir)) for c, w in candw.items() if w)
    cs = np.where(seen, -np.inf, cs)
    cand = np.argsort(-cs, axis=1, kind='stable')[:, :N]; rows = np.arange(n)[:, None]
    F = {'cand_score': cs[rows, cand], 'cand_rank': np.broadcast_to(np.arange(N), (n, N))}
    del cs
    for c in ZC:
        S = run_component(c, s, e, workdir)
        F['z_' + c] = zscore(S)[rows, cand]
        if c in RC:
            F['r_' + c] = rank_matrix(S, seen)[rows, cand]
        if c == 'pop': F['logcnt'] = np.log1p(S[rows, cand])
        if c == 'popw': F['logcntw'] = np.log1p(S[rows, cand])
        if c == 'bayes': F['bayes'] = S[rows, cand]
    ev, lastk = event_feats(s, e)
    for j, nm in enumerate(['log_pos', 'log_gap', 'same_sec', 'sit_len', 'batch_len', 'u_mean_r', 'last_r', 'now_year']):
        F[nm] = np.broadcast_to(ev[:, j:j + 1], (n, N))
    cy = YEAR[cand]; F['year'] = cy; F['age'] = ev[:, 7:8] - cy
    has = lastk >= 0
    ly = np.where(has, YEAR[np.maximum(lastk, 0)], np.nan)
    F['dyear1'] = np.abs(cy - ly[:, :1])
    dy = np.abs(cy[:, :, None] - ly[:, None, :])
    F['dyear_min5'] = np.min(np.where(np.isnan(dy), 999, dy), axis=2)
    F['did_min5'] = np.abs(cand[:, :, None] - np.where(has, lastk, -10**6)[:, None, :]).min(2)
    cg = GEN[cand]; lg = np.where(has[:, :, None], GEN[np.maximum(lastk, 0)], 0).sum(1)
    F['gen_ovl5'] = (cg * lg[:, None, :]).sum(2) / np.maximum(lg.sum(1), 1)[:, None]
    F1, F7, FF = item_time_state(s, e)
    F['logc1d'] = np.log1p(F1[rows, cand]); F['logc7d'] = np.log1p(F7[rows, cand]); F['log_item_age_days'] = FF[rows, cand]
    del F1, F7, FF
    us = pd.read_csv(D + 'ml-100k.user', sep='\t'); us.columns = ['user', 'age', 'gender', 'occ', 'zip']
    us = us.set_index('user').reindex(np.arange(1, NU + 1))
    uu = U_[s:e]
    F['u_age'] = np.broadcast_to(us.age.values.astype(np.float32)[uu][:, None], (n, N))
    F['u_male'] = np.broadcast_to((us.gender == 'M').values.astype(np.float32)[uu][:, None], (n, N))
    names = list(F)
    X = np.stack([np.asarray(F[k], np.float32) for k in names], axis=2)
    y = cand == tg[:, None]
    np.savez(path, X=X, y=y, names=np.array(names))
    return X, y, names


# --------------------------------------------------------------------------- reranker
def fit_reranker(Xs, ys):
    from sklearn.ensemble import HistGradientBoostingClassifier
    f = Xs[0].shape[2]
    Xa = np.concatenate([x.reshape(-1, f) for x in Xs]); ya = np.concatenate([y.reshape(-1) for y in ys])
    keep = ya | (np.random.default_rng(0).random(len(ya)) < 0.3)      # keep 30 % of the negatives
    clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=200,
                                         l2_regularization=1.0, random_state=0)
    return clf.fit(Xa[keep], ya[keep])


def cand_eval(P, y):
    """HR/MRR@10 of candidate scores P (n, N) given labels y (target absent -> miss)."""
    n = len(y); has = y.any(1)
    tp = np.where(has, P[np.arange(n), y.argmax(1)], np.inf)
    r = np.where(has, (P > tp[:, None]).sum(1), 10**6)
    return hr_mrr(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--mode', default='test', choices=['test', 'validate'])
    ap.add_argument('--workdir', default='/tmp/exp_c/work')
    ap.add_argument('--refresh', type=int, default=5000)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    t_start = time.time()
    if a.mode == 'test':
        replay = (80000, 100000); train_replays = [(40000, 50000), (50000, 60000), (60000, 70000), (70000, 80000)]
    else:
        replay = (60000, 80000); train_replays = [(20000, 30000), (30000, 40000), (40000, 50000), (50000, 60000)]
    blend_replay = (50000, 60000)       # candidate-blend weights fitted here (inside the training 80 %)

    wpath = f'{a.workdir}/candw.json'
    if os.path.exists(wpath):
        candw = json.load(open(wpath))
    else:
        s, e = blend_replay
        Zs = [zscore(run_component(c, s, e, a.workdir)) for c in CANDC]
        w = fit_blend(Zs, seen_mask(s, e), I_[s:e], init=[0.2, 0.1, 1, 1.5, 0.7, 0.2, 0.05, 0, 0])
        candw = dict(zip(CANDC, w)); json.dump(candw, open(wpath, 'w')); del Zs
    print('candidate blend weights (fitted on replay [50000,60000)):', candw, flush=True)

    Xs, ys = [], []
    for s, e in train_replays:
        X, y, names = build_features(s, e, candw, a.workdir); Xs.append(X); ys.append(y)
    Xb, yb, names = build_features(*replay, candw, a.workdir)
    s, e = replay
    print(f'features: {len(names)}; candidate recall@100 {yb.any(1).mean():.4f}', flush=True)
    # linear candidate blend alone (reference)
    hr0, mrr0 = cand_eval(-Xb[:, :, names.index('cand_rank')], yb)
    f = Xb.shape[2]; n = len(yb); P = np.zeros(yb.shape)
    for b in range(0, n, a.refresh):
        clf = fit_reranker(Xs + ([Xb[:b]] if b else []), ys + ([yb[:b]] if b else []))
        P[b:b + a.refresh] = clf.predict_proba(Xb[b:b + a.refresh].reshape(-1, f))[:, 1].reshape(yb[b:b + a.refresh].shape)
        print(f'  block [{s + b},{min(s + b + a.refresh, e)}) HR/MRR {cand_eval(P[b:b + a.refresh], yb[b:b + a.refresh])}', flush=True)
    hr, mrr = cand_eval(P, yb)
    print(f'\n[{a.mode}] replay [{s},{e}) ({n} events)')
    print(f'  linear candidate blend     HR@10 {hr0:.4f}  MRR@10 {mrr0:.4f}')
    print(f'  GBDT reranker (refresh {a.refresh}) HR@10 {hr:.4f}  MRR@10 {mrr:.4f}')
    print(f'  total runtime {time.time() - t_start:.0f}s')


if __name__ == '__main__':
    main()
