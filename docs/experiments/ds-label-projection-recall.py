# Float64 recall of Double Sparsity label choices on dumped queries and keys (2026-11-24).
# Dumps: docs/experiments/ds-qk-dump.patch, then
#   SIFT_DUMP_QK=fit sift calibrate -m gemma3-270m --statistic qk --tokens 16384 --sample-length 4096 -o fit/cal.json
#   SIFT_DUMP_QK=eval sift calibrate -m gemma3-270m --statistic qk --data heldout.txt --tokens 8192 --sample-length 4096 -o eval/cal.json
# (heldout.txt: every fifth essay by file name, joined by blank lines, as EssaySplit). Usage:
#   python3 ds-label-projection-recall.py fit eval HEADS HEAD_DIM LAYERS name:R:bits,... CHANNEL_CAL.json
# e.g. gemma: 4 256 5,11,17 chan:16:16,svd:16:16,svd:32:4,exact:256:16 docs/eval/cuda/gemma3-270m/ds-calibration-recall-per-head.json
# For each layer and KV head: the projection of LabelProjection.swift fitted on `fit`, then on
# `eval` queries (positions T/2..T, every 37th) the share of each head's exact softmax mass kept
# by the top-(L/16) selection (last 64 tokens pinned), shared (summed query) and per head.
# Measured (gemma, per-head / shared, mean of the 3 global layers): recall channels 16 f16
# 0.671 / 0.636, projected 16 f16 0.743 / 0.703, projected 32 4-bit 0.773 / 0.725, exact 0.811 / 0.749.
# Qwen 1.5B (12 6 128, layers 0,3,7,13,20,26,27, shared-recall channels): channels 8 0.756 / 0.753,
# projected 8 0.807 / 0.785, projected 16 4-bit 0.831 / 0.799, exact 0.861 / 0.818.
import numpy as np, json, sys
H, D = 4, 256
def load(path):
    raw = open(path,'rb').read(); off=0; out=[]
    while off < len(raw):
        start,rows,qc,kc = np.frombuffer(raw,dtype=np.int32,count=4,offset=off); off+=16
        q = np.frombuffer(raw,dtype=np.float32,count=rows*qc,offset=off).reshape(rows,qc); off+=rows*qc*4
        k = np.frombuffer(raw,dtype=np.float32,count=rows*kc,offset=off).reshape(rows,kc); off+=rows*kc*4
        if start==0: out.append([q,k])
        else: out[-1][0]=np.vstack([out[-1][0],q]); out[-1][1]=np.vstack([out[-1][1],k])
    return out
fitdir, evaldir = sys.argv[1], sys.argv[2]
H = int(sys.argv[3]); D = int(sys.argv[4]); layers = [int(x) for x in sys.argv[5].split(',')]
configs = [(c.split(':')[0], int(c.split(':')[1]), int(c.split(':')[2])) for c in sys.argv[6].split(',')]  # name:R:bits
chcal = json.load(open(sys.argv[7])) if len(sys.argv)>7 else None
scale = 1/np.sqrt(D) if D!=256 else 1/16.0
def psd_pow(S, p):
    w,V = np.linalg.eigh(S); w=np.maximum(w,1e-9*w.max()); return (V*w**p)@V.T
def quant4(x, mu, sd):
    z = (x-mu)/sd; lo = z.min(1,keepdims=True); hi = z.max(1,keepdims=True); st=(hi-lo)/15; st[st==0]=1
    c = np.round((z-lo)/st); return (c*st+lo)*sd+mu
tot = {}
for layer in layers:
    fit = load(f'{fitdir}/l{layer}.bin'); ev = load(f'{evaldir}/l{layer}.bin')
    KV = fit[0][1].shape[1]//D; G = H//KV
    out = []
    for kvh in range(KV):
        Q = np.vstack([s[0] for s in fit]).astype(np.float64).reshape(-1,H,D)[:, kvh*G:(kvh+1)*G]
        K = np.vstack([s[1] for s in fit]).astype(np.float64)[:, kvh*D:(kvh+1)*D]
        mu = K.mean(0); Kc = K-mu; Sk = Kc.T@Kc/len(K)
        Sq = sum(Q[:,h].T@Q[:,h] for h in range(G))/len(Q)
        Skh = psd_pow(Sk,0.5); Skmh = psd_pow(Sk,-0.5)
        N = Skh@Sq@Skh; w,V = np.linalg.eigh(N); V=V[:, ::-1]
        projs = {}
        for name,R,bits in configs:
            if name=='svd':
                E=V[:,:R]; projs[(name,R,bits)] = (E.T@Skmh, E.T@Skh)
            elif name=='chan':
                ch = np.array(chcal['channels'][layer][kvh][:R]); Sel=np.zeros((R,D)); Sel[np.arange(R),ch]=1
                projs[(name,R,bits)] = (Sel,Sel)
            elif name=='exact': projs[(name,R,bits)] = (np.eye(D),np.eye(D))
        res = {n:{'shared':[], 'per-head':[]} for n in projs}
        for q,k in ev:
            q=q.astype(np.float64).reshape(-1,H,D)[:, kvh*G:(kvh+1)*G]; k=k.astype(np.float64)[:, kvh*D:(kvh+1)*D]; T=len(k)
            labs = {}
            for n,(Bk,Aq) in projs.items():
                lab = k@Bk.T
                if n[2]==4:
                    lm = (K@Bk.T); labs[n] = quant4(lab, lm.mean(0), lm.std(0)+1e-12)
                else: labs[n] = lab.astype(np.float16).astype(np.float64)
            for t in range(T//2, T, 37):
                vis=t+1; budget=max(1,vis//16); recent=min(64,budget)
                logits=(q[t]@k[:vis].T)*scale; p=np.exp(logits-logits.max(1,keepdims=True)); p/=p.sum(1,keepdims=True)
                for n,(Bk,Aq) in projs.items():
                    lab=labs[n][:vis]; qa=q[t]@Aq.T
                    s=lab@qa.sum(0); s[vis-recent:]=np.inf; sel=np.argpartition(-s,budget-1)[:budget]
                    res[n]['shared'].append(p[:,sel].sum()/G)
                    kept=0
                    for h in range(G):
                        s=lab@qa[h]; s[vis-recent:]=np.inf; sel=np.argpartition(-s,budget-1)[:budget]; kept+=p[h,sel].sum()/G
                    res[n]['per-head'].append(kept)
        for n,v in res.items():
            tot.setdefault(n,{'shared':[], 'per-head':[]}); tot[n]['shared']+=v['shared']; tot[n]['per-head']+=v['per-head']
        print(f'layer {layer} kv {kvh}: ' + '  '.join(f"{n[0]}{n[1]}/{n[2]}b sh {np.mean(v['shared']):.3f} ph {np.mean(v['per-head']):.3f}" for n,v in res.items()), flush=True)
print('MEAN: ' + '  '.join(f"{n[0]}{n[1]}/{n[2]}b sh {np.mean(v['shared']):.3f} ph {np.mean(v['per-head']):.3f}" for n,v in tot.items()))
