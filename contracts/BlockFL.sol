// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title BlockFL: blocks of signed local model updates, attested by a quorum of miners
/// @notice One block per round. A registered miner submits the block of round `head + 1` with
/// a proof-of-work nonce and EIP-712 attestations of other registered miners over
/// (round, prevHash, updatesRoot, globalModelHash, protocol spec hash, committer): at least
/// `quorum` distinct miners, the committer included, must stand behind every block, and an
/// attestation names the one miner that may commit it.
/// Two modes. `direct`: the block holds every update (sorted by device address); the contract
/// checks each device's signature and sample-count cap and mints the data rewards in the
/// commit. `merkle`: the block holds the root of an OpenZeppelin Merkle tree over the update
/// records with their count and total samples (the attesting miners checked every signature);
/// each device claims its reward with a proof, so a block costs the same gas at any size, and
/// a claim is held to every bound a direct commit enforces (allow-list, sample cap, the block's
/// update count and total samples), so even a colluding quorum mints no more than direct mode.
/// A second block for a committed round is a fork and reverts with `RoundAlreadyCommitted`.
/// A miner that attests two different candidates of one committer for one round can be reported
/// by anyone: the contract emits `Equivocation` and removes it, so it earns no further mining
/// rewards. (Candidates of different committers are not equivocation: only one block of a round
/// lands, and a committer that collects attestations and never commits cannot stall the others.)
/// The contract is itself the reward token (an OpenZeppelin ERC-20 only it mints): a mint is
/// then no external call, which saves a cold account access and a call on every payment.
contract BlockFL is ERC20, Ownable2Step, EIP712 {
    /// @notice A device's signed local update as carried in a direct-mode block.
    struct Update {
        address device;
        bytes32 baseModelHash;
        bytes32 updateHash;
        uint64 samples;
        uint64 computeTimeMs;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice A miner's EIP-2098 compact signature of a `BlockAttestation`.
    struct Signature {
        bytes32 r;
        bytes32 vs;
    }

    /// @notice The candidate a `BlockAttestation` is about, without its round.
    struct Candidate {
        bytes32 prevHash;
        bytes32 updatesRoot;
        bytes32 globalModelHash;
        bytes32 specHash;
        address committer;
    }

    /// @notice A leaf of a merkle-mode block: an update record and its position in the block.
    struct Leaf {
        uint32 index;
        address device;
        uint64 round;
        bytes32 baseModelHash;
        bytes32 updateHash;
        uint64 samples;
        uint64 computeTimeMs;
    }

    /// @notice One claim of `claimMany`.
    struct Claim {
        Leaf leaf;
        bytes32[] proof;
    }

    /// @notice A committed block as stored (4 slots; the nonce is in `BlockCommitted`).
    /// In merkle mode `updatesRoot` is the Merkle root that claims are checked against.
    struct StoredBlock {
        bytes32 blockHash;
        bytes32 globalModelHash;
        bytes32 updatesRoot;
        address miner;
        uint32 numUpdates;
        uint64 totalSamples;
    }

    /// @notice A committed block as `getBlock` returns it.
    struct BlockRecord {
        bytes32 blockHash;
        bytes32 prevHash;
        bytes32 globalModelHash;
        bytes32 updatesRoot;
        address miner;
        uint32 numUpdates;
        uint64 totalSamples;
    }

    /// @notice Parameters fixed at deployment (the target can be changed by the owner).
    struct Params {
        uint256 target;
        uint256 rewardPerSample;
        uint256 miningReward;
        uint64 maxSamplesPerUpdate;
        uint32 maxUpdatesPerBlock;
        bool deviceAllowList;
        uint8 mode;
        uint16 quorum;
        bytes32 genesisModelHash;
        bytes32 protocolSpecHash;
    }

    uint8 public constant MODE_DIRECT = 0;
    uint8 public constant MODE_MERKLE = 1;
    /// @notice The most miners the list's data contract holds (its code: 1 + 32 bytes each <= 24,576).
    uint256 public constant MAX_MINERS = 767;
    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "LocalUpdate(address device,uint64 round,bytes32 baseModelHash,bytes32 updateHash,uint64 samples,uint64 computeTimeMs)"
    );
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "BlockAttestation(uint64 round,bytes32 prevHash,bytes32 updatesRoot,bytes32 globalModelHash,bytes32 specHash,address committer)"
    );
    /// @dev The low 64 bits of a round's first claim word count the samples claimed in that
    /// round; the claimed bit of leaf `index` is bit `index + 64` of the round's words.
    uint256 internal constant CLAIMED_SAMPLES_BITS = 64;

    Params internal _params;
    // copies of the fixed parameters read on every commit and claim (an immutable costs no SLOAD)
    uint256 internal immutable _rewardPerSample;
    uint256 internal immutable _miningReward;
    bytes32 internal immutable _specHash;
    uint64 internal immutable _maxSamples;
    uint32 internal immutable _maxUpdates;
    uint16 internal immutable _quorum;
    uint8 internal immutable _mode;
    bool internal immutable _allowList;
    uint64 public headRound;
    uint32 public minerCount;
    /// @dev A data contract (created anew on every change of the miner set) whose code is a STOP
    /// byte, then the registered miners in ascending order, 32 bytes each: a commit with
    /// attestations reads them all with one EXTCODECOPY, one cold account access instead of a
    /// cold storage read per attester. It shares the head's storage slot.
    address internal _minerList;
    mapping(uint64 round => StoredBlock) internal _blocks;
    mapping(address => bool) public isMiner;
    mapping(address => bool) public isDeviceAllowed;
    mapping(uint64 round => mapping(uint256 word => uint256 bits)) internal _claimed;

    event MinerAdded(address indexed miner);
    event MinerRemoved(address indexed miner);
    event DeviceAllowed(address indexed device, bool allowed);
    event TargetChanged(uint256 target);
    event BlockCommitted(
        uint64 indexed round,
        bytes32 indexed blockHash,
        address indexed miner,
        bytes32 globalModelHash,
        bytes32 updatesRoot,
        uint256 numUpdates,
        uint256 totalSamples,
        uint256 nonce
    );
    event UpdateAccepted(
        uint64 indexed round, address indexed device, bytes32 updateHash, uint256 samples, uint256 reward
    );
    event Equivocation(
        address indexed miner, uint64 indexed round, bytes32 digestA, bytes32 digestB, address reporter
    );

    error NotMiner(address sender);
    error InvalidParams(uint64 maxSamplesPerUpdate, uint32 maxUpdatesPerBlock);
    error WrongMode(uint8 mode);
    error RoundAlreadyCommitted(uint64 round, bytes32 committedHash);
    error WrongRound(uint64 expected, uint64 given);
    error WrongPreviousHash(bytes32 expected, bytes32 given);
    error EmptyBlock();
    error TooManyUpdates(uint256 count, uint256 max);
    error UpdatesNotSorted(uint256 index);
    error DuplicateDevice(uint256 index, address device);
    error DeviceNotAllowed(uint256 index, address device);
    error SampleCountOutOfRange(uint256 index, uint64 samples, uint64 cap);
    error StaleBaseModel(uint256 index, bytes32 expected, bytes32 given);
    error MalformedSignature(uint256 index);
    error InvalidSignature(uint256 index, address device, address signer);
    error InsufficientWork(bytes32 blockHash, uint256 target);
    error MalformedAttestation(uint256 index);
    error AttesterNotMiner(uint256 index, address signer);
    error DuplicateAttester(uint256 index, address signer);
    error AttestationsNotSorted(uint256 index);
    error TooManyMiners(uint256 count, uint256 max);
    error MinerListNotStored();
    error QuorumNotReached(uint256 attesters, uint256 quorum);
    error NotEquivocation();
    error NoMerkleBlock(uint64 round);
    error ClaimWrongRound(uint64 round, uint64 recordRound);
    error AlreadyClaimed(uint64 round, uint32 index);
    error InvalidProof(uint64 round, uint32 index);
    error ClaimIndexOutOfRange(uint64 round, uint32 index, uint32 numUpdates);
    error ClaimExceedsTotal(uint64 round, uint256 claimedSamples, uint64 totalSamples);
    error QuorumUnreachable(uint256 quorum, uint256 miners);

    constructor(Params memory params_, address[] memory miners_)
        ERC20("BlockFL Reward", "BFLR")
        Ownable(msg.sender)
        EIP712("BlockFL", "1")
    {
        // a block's total samples is stored as uint64: the largest possible block must fit
        if (uint256(params_.maxSamplesPerUpdate) * params_.maxUpdatesPerBlock > type(uint64).max) {
            revert InvalidParams(params_.maxSamplesPerUpdate, params_.maxUpdatesPerBlock);
        }
        if (params_.mode > MODE_MERKLE) revert WrongMode(params_.mode);
        _params = params_;
        _rewardPerSample = params_.rewardPerSample;
        _miningReward = params_.miningReward;
        _specHash = params_.protocolSpecHash;
        _maxSamples = params_.maxSamplesPerUpdate;
        _maxUpdates = params_.maxUpdatesPerBlock;
        _quorum = params_.quorum;
        _mode = params_.mode;
        _allowList = params_.deviceAllowList;
        // the distinct miners, sorted into one list stored once
        address[] memory list = new address[](miners_.length);
        uint256 n = 0;
        for (uint256 i = 0; i < miners_.length; ++i) {
            if (isMiner[miners_[i]]) continue;
            _register(miners_[i]);
            _insertSorted(list, n++, miners_[i]);
        }
        assembly ("memory-safe") {
            mstore(list, n) // drop the places of repeated addresses
        }
        if (params_.quorum > n) revert QuorumUnreachable(params_.quorum, n);
        _storeMiners(list);
    }

    // ------------------------------------------------------------------ administration

    /// @notice Register a miner (owner only).
    function addMiner(address miner) external onlyOwner {
        if (isMiner[miner]) return;
        _register(miner);
        address[] memory list = _readMiners(1);
        _insertSorted(list, list.length - 1, miner);
        _storeMiners(list);
    }

    /// @notice Deregister a miner (owner only).
    function removeMiner(address miner) external onlyOwner {
        _removeMiner(miner);
    }

    /// @notice Allow or disallow a device when the allow-list is enabled (owner only).
    function setDeviceAllowed(address device, bool allowed) external onlyOwner {
        isDeviceAllowed[device] = allowed;
        emit DeviceAllowed(device, allowed);
    }

    /// @notice Change the proof-of-work target, i.e. the block generation rate (owner only).
    function setTarget(uint256 target) external onlyOwner {
        _params.target = target;
        emit TargetChanged(target);
    }

    // ------------------------------------------------------------------ views

    /// @notice The reward token: this contract itself.
    function token() external view returns (address) {
        return address(this);
    }

    /// @notice The registered miners in ascending address order.
    function miners() public view returns (address[] memory) {
        return _readMiners(0);
    }

    /// @notice The parameters of this deployment.
    function parameters() external view returns (Params memory) {
        return _params;
    }

    /// @notice Hash of the protocol spec every node must run (keccak of its canonical JSON).
    function protocolSpecHash() external view returns (bytes32) {
        return _params.protocolSpecHash;
    }

    /// @notice Distinct miners that must stand behind a block: `quorum`, or when it is 0 a
    /// majority of the miners registered now. A fixed quorum above the miners registered now
    /// (after removals, which `reportEquivocation` cannot refuse) asks for all of them, so the
    /// chain never halts for want of miners; it is `quorum` again once enough are added.
    function requiredAttesters() public view returns (uint256) {
        uint256 n = minerCount;
        if (_quorum == 0) return n / 2 + 1;
        return _quorum < n ? _quorum : n;
    }

    /// @notice The chain head: last committed round, its block hash and global model hash.
    function head() external view returns (uint64 round, bytes32 blockHash, bytes32 globalModelHash) {
        round = headRound;
        (blockHash, globalModelHash) = _headLink();
    }

    /// @notice The block committed for `round` (all zero if none).
    function getBlock(uint64 round) external view returns (BlockRecord memory b) {
        StoredBlock storage s = _blocks[round];
        if (s.blockHash == bytes32(0)) return b;
        bytes32 prev = round > 1 ? _blocks[round - 1].blockHash : bytes32(0);
        return BlockRecord(
            s.blockHash, prev, s.globalModelHash, s.updatesRoot, s.miner, s.numUpdates, s.totalSamples
        );
    }

    /// @notice Whether the update at `index` of the merkle block of `round` was claimed.
    function isClaimed(uint64 round, uint256 index) public view returns (bool) {
        if (index > type(uint32).max) return false; // no leaf has such an index
        uint256 position = index + CLAIMED_SAMPLES_BITS;
        return _claimed[round][position >> 8] & (1 << (position & 0xff)) != 0;
    }

    /// @notice The samples claimed so far in the merkle block of `round` (at most its total).
    function claimedSamples(uint64 round) external view returns (uint64) {
        return uint64(_claimed[round][0]);
    }

    /// @notice The EIP-712 digest a device signs for its update in `round`.
    function updateDigest(
        address device,
        uint64 round,
        bytes32 baseModelHash,
        bytes32 updateHash,
        uint64 samples,
        uint64 computeTimeMs
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(UPDATE_TYPEHASH, device, round, baseModelHash, updateHash, samples, computeTimeMs)
            )
        );
    }

    /// @notice The EIP-712 digest a miner signs to attest a candidate of `round`.
    function attestationDigest(uint64 round, Candidate memory c) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ATTESTATION_TYPEHASH, round, c.prevHash, c.updatesRoot, c.globalModelHash, c.specHash, c.committer
                )
            )
        );
    }

    /// @notice The block hash that the proof-of-work must bring at or below `target`.
    function blockHashOf(
        bytes32 prevHash,
        uint64 round,
        bytes32 globalModelHash,
        bytes32 updatesRoot,
        address miner,
        uint256 nonce
    ) public pure returns (bytes32) {
        return keccak256(abi.encode(prevHash, round, globalModelHash, updatesRoot, miner, nonce));
    }

    /// @notice What a merkle block's header and attestations commit to as its updates root:
    /// the Merkle root bound to the update count and total samples.
    function merkleUpdatesRoot(bytes32 merkleRoot, uint32 numUpdates, uint64 totalSamples)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(merkleRoot, numUpdates, totalSamples));
    }

    /// @notice The leaf of an update record in a merkle block (double keccak, as OpenZeppelin's
    /// StandardMerkleTree hashes leaves).
    function leafHash(Leaf calldata leaf) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(leaf))));
    }

    // ------------------------------------------------------------------ blocks

    /// @notice Commit the direct-mode block of `round` (head + 1), paying every device and the miner.
    function commitBlock(
        bytes32 prevHash,
        uint64 round,
        bytes32 globalModelHash,
        Update[] calldata updates,
        uint256 nonce,
        Signature[] calldata attestations
    ) external returns (bytes32 blockHash) {
        address[] memory registered = _checkCommitter(attestations.length > 0);
        bytes32 baseModel = _checkLink(prevHash, round, MODE_DIRECT);
        Params memory p = _params;
        uint256 n = updates.length;
        _checkCount(n, p.maxUpdatesPerBlock);

        bytes32[] memory digests = new bytes32[](n);
        uint256 totalSamples;
        for (uint256 i = 0; i < n; ++i) {
            digests[i] = _checkUpdate(updates, i, round, baseModel, p);
            totalSamples += updates[i].samples;
        }
        bytes32 updatesRoot = keccak256(abi.encodePacked(digests));
        blockHash = _record(prevHash, round, globalModelHash, updatesRoot, updatesRoot, n, totalSamples, nonce);
        _checkAttestations(
            round,
            Candidate(prevHash, updatesRoot, globalModelHash, p.protocolSpecHash, msg.sender),
            attestations,
            registered
        );

        for (uint256 i = 0; i < n; ++i) {
            Update calldata u = updates[i];
            uint256 reward = uint256(u.samples) * p.rewardPerSample;
            _mint(u.device, reward);
            emit UpdateAccepted(round, u.device, u.updateHash, u.samples, reward);
        }
        if (p.miningReward > 0) _mint(msg.sender, p.miningReward);
    }

    /// @notice Commit the merkle-mode block of `round`: the Merkle root of its update records,
    /// their count and total samples. Devices claim their data rewards with proofs.
    function commitRoot(
        bytes32 prevHash,
        uint64 round,
        bytes32 globalModelHash,
        bytes32 merkleRoot,
        uint32 numUpdates,
        uint64 totalSamples,
        uint256 nonce,
        Signature[] calldata attestations
    ) external returns (bytes32 blockHash) {
        address[] memory registered = _checkCommitter(attestations.length > 0);
        _checkLink(prevHash, round, MODE_MERKLE);
        _checkCount(numUpdates, _maxUpdates);
        bytes32 updatesRoot = merkleUpdatesRoot(merkleRoot, numUpdates, totalSamples);
        blockHash =
            _record(prevHash, round, globalModelHash, updatesRoot, merkleRoot, numUpdates, totalSamples, nonce);
        _checkAttestations(
            round, Candidate(prevHash, updatesRoot, globalModelHash, _specHash, msg.sender), attestations, registered
        );
        if (_miningReward > 0) _mint(msg.sender, _miningReward);
    }

    // ------------------------------------------------------------------ claims (merkle mode)

    /// @notice Pay the data reward of one update in the merkle block of `round`. The update
    /// must be in the committed tree, unclaimed, at an index below the block's update count,
    /// from an allowed device (when the allow-list is on, as it stands at the claim), with
    /// 1 to `maxSamplesPerUpdate` samples, and the round's claimed samples stay within its total.
    function claim(uint64 round, Leaf calldata leaf, bytes32[] calldata proof) external {
        _claim(round, leaf, proof);
    }

    /// @notice Pay several updates of the merkle block of `round` in one transaction.
    function claimMany(uint64 round, Claim[] calldata claims) external {
        for (uint256 i = 0; i < claims.length; ++i) {
            _claim(round, claims[i].leaf, claims[i].proof);
        }
    }

    // ------------------------------------------------------------------ equivocation

    /// @notice Prove that a miner attested two different candidates of one committer for
    /// `round`: the miner is removed (it can commit and attest no more, so it earns no further
    /// mining rewards).
    function reportEquivocation(
        uint64 round,
        Candidate calldata a,
        Signature calldata sigA,
        Candidate calldata b,
        Signature calldata sigB
    ) external {
        bytes32 digestA = attestationDigest(round, a);
        bytes32 digestB = attestationDigest(round, b);
        if (digestA == digestB || a.committer != b.committer) revert NotEquivocation();
        address signer = _attester(digestA, sigA, 0);
        if (_attester(digestB, sigB, 1) != signer) revert NotEquivocation();
        if (!isMiner[signer]) revert NotMiner(signer);
        _removeMiner(signer);
        emit Equivocation(signer, round, digestA, digestB, msg.sender);
    }

    // ------------------------------------------------------------------ internals

    /// @dev Mark `miner` registered (the caller stores the new list).
    function _register(address miner) internal {
        isMiner[miner] = true;
        emit MinerAdded(miner);
    }

    function _removeMiner(address miner) internal {
        if (!isMiner[miner]) revert NotMiner(miner);
        isMiner[miner] = false;
        address[] memory old = _readMiners(0);
        address[] memory list = new address[](old.length - 1);
        uint256 j = 0;
        for (uint256 i = 0; i < old.length; ++i) {
            if (old[i] != miner) list[j++] = old[i];
        }
        _storeMiners(list);
        emit MinerRemoved(miner);
    }

    /// @dev The registered miners, read from `_minerList`, followed by `room` empty places.
    function _readMiners(uint256 room) internal view returns (address[] memory list) {
        uint256 n = minerCount;
        address data = _minerList;
        list = new address[](n + room);
        assembly ("memory-safe") {
            extcodecopy(data, add(list, 0x20), 1, shl(5, n))
        }
    }

    /// @dev Insert `miner` in its place among the ascending first `n` entries of `list`, which has
    /// room for it.
    function _insertSorted(address[] memory list, uint256 n, address miner) internal pure {
        uint256 i = n;
        for (; i > 0 && list[i - 1] > miner; --i) {
            list[i] = list[i - 1];
        }
        list[i] = miner;
    }

    /// @dev Store the ascending `list` as the code of a fresh data contract (`_minerList`).
    function _storeMiners(address[] memory list) internal {
        if (list.length > MAX_MINERS) revert TooManyMiners(list.length, MAX_MINERS);
        bytes memory code = abi.encodePacked(hex"00", list);
        // creation code: PUSH4 size, DUP1, PUSH1 14, PUSH1 0, CODECOPY, PUSH1 0, RETURN; then the code
        bytes memory creation = abi.encodePacked(hex"63", uint32(code.length), hex"80600e6000396000f3", code);
        address data;
        assembly ("memory-safe") {
            data := create(0, add(creation, 0x20), mload(creation))
        }
        if (data == address(0)) revert MinerListNotStored();
        _minerList = data;
        minerCount = uint32(list.length);
    }

    /// @dev The round and the chain link; returns the head's global model hash.
    function _checkLink(bytes32 prevHash, uint64 round, uint8 mode) internal view returns (bytes32 baseModel) {
        if (_mode != mode) revert WrongMode(_mode);
        uint64 current = headRound;
        if (round == 0 || round > current + 1) revert WrongRound(current + 1, round);
        if (round <= current) revert RoundAlreadyCommitted(round, _blocks[round].blockHash);
        bytes32 headHash;
        (headHash, baseModel) = _headLink();
        if (prevHash != headHash) revert WrongPreviousHash(headHash, prevHash);
    }

    /// @dev The sender is a registered miner. A commit with attestations reads the registered
    /// miners (returned, to find the attesters in) and finds the sender there; one without reads
    /// the sender's `isMiner` flag alone.
    function _checkCommitter(bool attested) internal view returns (address[] memory registered) {
        if (attested) {
            registered = _readMiners(0);
            for (uint256 i = 0; i < registered.length; ++i) {
                if (_at(registered, i) == msg.sender) return registered;
            }
        } else if (isMiner[msg.sender]) {
            return registered;
        }
        revert NotMiner(msg.sender);
    }

    function _checkCount(uint256 n, uint32 max) internal pure {
        if (n == 0) revert EmptyBlock();
        if (n > max) revert TooManyUpdates(n, max);
    }

    /// @dev Check the proof-of-work, store the block and move the head.
    function _record(
        bytes32 prevHash,
        uint64 round,
        bytes32 globalModelHash,
        bytes32 updatesRoot,
        bytes32 storedRoot,
        uint256 n,
        uint256 totalSamples,
        uint256 nonce
    ) internal returns (bytes32 blockHash) {
        blockHash = blockHashOf(prevHash, round, globalModelHash, updatesRoot, msg.sender, nonce);
        uint256 target = _params.target;
        if (uint256(blockHash) > target) revert InsufficientWork(blockHash, target);
        headRound = round;
        _blocks[round] = StoredBlock({
            blockHash: blockHash,
            globalModelHash: globalModelHash,
            updatesRoot: storedRoot,
            miner: msg.sender,
            numUpdates: uint32(n),
            totalSamples: uint64(totalSamples)
        });
        emit BlockCommitted(round, blockHash, msg.sender, globalModelHash, storedRoot, n, totalSamples, nonce);
    }

    /// @dev At least `requiredAttesters()` distinct registered miners, the committer included,
    /// signed this candidate; signers in ascending address order (so duplicates are visible),
    /// each found by one walk along them and the ascending `registered` miners.
    function _checkAttestations(
        uint64 round,
        Candidate memory c,
        Signature[] calldata sigs,
        address[] memory registered
    ) internal view {
        bytes32 digest = attestationDigest(round, c);
        address previous = address(0);
        bool committerSigned = false;
        uint256 j = 0; // where the walk along `registered` stands
        for (uint256 i = 0; i < sigs.length; ++i) {
            address signer = _attester(digest, sigs[i], i);
            if (signer <= previous) {
                if (signer == previous) revert DuplicateAttester(i, signer);
                revert AttestationsNotSorted(i);
            }
            while (true) {
                if (j == registered.length) revert AttesterNotMiner(i, signer);
                address listed = _at(registered, j);
                if (listed == signer) break;
                if (listed > signer) revert AttesterNotMiner(i, signer);
                unchecked {
                    ++j;
                }
            }
            if (signer == msg.sender) committerSigned = true;
            previous = signer;
        }
        uint256 attesters = sigs.length + (committerSigned ? 0 : 1);
        uint256 quorum = requiredAttesters();
        if (attesters < quorum) revert QuorumNotReached(attesters, quorum);
    }

    /// @dev `list[i]` for an `i` known to be in range (no bounds check: it runs per step of a walk).
    function _at(address[] memory list, uint256 i) private pure returns (address item) {
        assembly ("memory-safe") {
            item := mload(add(list, shl(5, add(i, 1))))
        }
    }

    function _attester(bytes32 digest, Signature calldata sig, uint256 i) internal pure returns (address signer) {
        ECDSA.RecoverError err;
        (signer, err,) = ECDSA.tryRecover(digest, sig.r, sig.vs);
        if (err != ECDSA.RecoverError.NoError) revert MalformedAttestation(i);
    }

    function _claim(uint64 round, Leaf calldata leaf, bytes32[] calldata proof) internal {
        if (_mode != MODE_MERKLE) revert WrongMode(_mode);
        if (leaf.round != round) revert ClaimWrongRound(round, leaf.round);
        StoredBlock storage b = _blocks[round];
        bytes32 root = b.updatesRoot;
        if (root == bytes32(0)) revert NoMerkleBlock(round);
        (uint32 count, uint64 total) = (b.numUpdates, b.totalSamples);
        if (leaf.index >= count) revert ClaimIndexOutOfRange(round, leaf.index, count);
        uint256 position = uint256(leaf.index) + CLAIMED_SAMPLES_BITS;
        uint256 word = position >> 8;
        uint256 bit = 1 << (position & 0xff);
        mapping(uint256 => uint256) storage claimed = _claimed[round];
        uint256 bits = claimed[word];
        if (bits & bit != 0) revert AlreadyClaimed(round, leaf.index);
        if (!MerkleProof.verifyCalldata(proof, root, leafHash(leaf))) revert InvalidProof(round, leaf.index);
        if (_allowList && !isDeviceAllowed[leaf.device]) revert DeviceNotAllowed(leaf.index, leaf.device);
        if (leaf.samples == 0 || leaf.samples > _maxSamples) {
            revert SampleCountOutOfRange(leaf.index, leaf.samples, _maxSamples);
        }
        // the round's claimed samples, in the low bits of its first word (often this leaf's)
        uint256 first = word == 0 ? bits | bit : claimed[0];
        uint256 sum = uint64(first) + uint256(leaf.samples);
        if (sum > total) revert ClaimExceedsTotal(round, sum, total);
        claimed[0] = (first >> CLAIMED_SAMPLES_BITS << CLAIMED_SAMPLES_BITS) | sum;
        if (word != 0) claimed[word] = bits | bit;
        uint256 reward = uint256(leaf.samples) * _rewardPerSample;
        _mint(leaf.device, reward);
        emit UpdateAccepted(round, leaf.device, leaf.updateHash, leaf.samples, reward);
    }

    /// @dev Check update `i` of a direct block of `round`; return its EIP-712 digest.
    function _checkUpdate(
        Update[] calldata updates,
        uint256 i,
        uint64 round,
        bytes32 baseModel,
        Params memory p
    ) internal view returns (bytes32 digest) {
        Update calldata u = updates[i];
        if (i > 0) {
            address previous = updates[i - 1].device;
            if (u.device == previous) revert DuplicateDevice(i, u.device);
            if (u.device < previous) revert UpdatesNotSorted(i);
        }
        if (p.deviceAllowList && !isDeviceAllowed[u.device]) revert DeviceNotAllowed(i, u.device);
        if (u.samples == 0 || u.samples > p.maxSamplesPerUpdate) {
            revert SampleCountOutOfRange(i, u.samples, p.maxSamplesPerUpdate);
        }
        if (u.baseModelHash != baseModel) revert StaleBaseModel(i, baseModel, u.baseModelHash);
        digest = updateDigest(u.device, round, u.baseModelHash, u.updateHash, u.samples, u.computeTimeMs);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, u.v, u.r, u.s);
        if (err != ECDSA.RecoverError.NoError) revert MalformedSignature(i);
        if (signer != u.device) revert InvalidSignature(i, u.device, signer);
    }

    function _headLink() internal view returns (bytes32 blockHash, bytes32 globalModelHash) {
        uint64 current = headRound;
        if (current == 0) return (bytes32(0), _params.genesisModelHash);
        StoredBlock storage b = _blocks[current];
        return (b.blockHash, b.globalModelHash);
    }
}
